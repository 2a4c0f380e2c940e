//! A fault-injecting PKCS#11 module for custody's tests: it loads the real module (SoftHSM2
//! by default), forwards every call to it, and on the way fails, rewrites or hides what a
//! fault plan says. Test-only: never ship it, never point a production custody at it.
//!
//! # Environment
//!
//! | variable | meaning |
//! |---|---|
//! | `CUSTODY_FAULT_TARGET` | the real module (default `$SOFTHSM2_MODULE`, else SoftHSM2's usual paths) |
//! | `CUSTODY_FAULT_PLAN` | the plan, as JSON |
//! | `CUSTODY_FAULT_PLAN_FILE` | a file holding the plan, re-read whenever it changes (so a running `custody watch` gets new faults) |
//! | `CUSTODY_FAULT_LOG` | the call log: one line per call, `PID INDEX FUNCTION RV ORIGIN` (tab-separated; never an argument, so never a PIN) |
//! | `CUSTODY_FAULT_STATE` | where serials changed by C_InitToken are kept for later processes |
//!
//! # The plan
//!
//! ```json
//! {
//!   "faults": [
//!     {"at": 17, "rv": "CKR_DEVICE_REMOVED"},
//!     {"function": "C_FindObjects", "nth": 2, "rv": "CKR_DEVICE_ERROR"},
//!     {"function": "C_GetTokenInfo", "from": 30, "rv": "CKR_TOKEN_NOT_PRESENT"},
//!     {"function": "C_GetSlotList", "from_nth": 3, "empty": true}
//!   ],
//!   "tokens": [{"serial": "*", "report": {"serial": "0000000000000000", "model": "TPM\u0000\u0000"}}],
//!   "hidden": ["3c5e0a1b2d4f6789"],
//!   "keys": [{"id": "01", "key_type": "CKK_DSTU4145"}],
//!   "reinit_changes_serial": true,
//!   "library": {"manufacturer": "custody fault injector"},
//!   "slot_events": true
//! }
//! ```
//!
//! - `faults`: the first rule matching a call decides. `at` is the process-wide call index (1
//!   is the first call, numbered as in the call log); `nth` the n-th call of `function`;
//!   `from` / `from_nth` every call from there on; none of them: every call of `function`.
//!   `rv` is returned instead of calling the real module; `empty: true` makes C_GetSlotList
//!   answer CKR_OK with no slots.
//! - `tokens`: C_GetTokenInfo fields (`serial`, `model`, `manufacturer`, `label` as text or
//!   `{"hex": …}`, `set_flags`, `clear_flags`) for the token with that real serial, or `*`.
//! - `hidden`: tokens (by real serial) that look pulled out: C_GetSlotList with tokenPresent
//!   leaves their slot out, C_GetSlotInfo clears CKF_TOKEN_PRESENT, C_GetTokenInfo and
//!   C_OpenSession answer CKR_TOKEN_NOT_PRESENT, calls on their sessions CKR_DEVICE_REMOVED
//!   (CKR_SESSION_HANDLE_INVALID once shown again). Slots report CKF_REMOVABLE_DEVICE (also
//!   with `removable: true`).
//! - `keys`: key objects (by CKA_ID, `class` private (default) / public / any, optional
//!   `serial`) whose CKA_KEY_TYPE reads as `key_type` (default CKK_DSTU4145, 0x80420131).
//! - `reinit_changes_serial`: every successful C_InitToken gives the token a new serial.
//! - `slot_events` (default true): C_WaitForSlotEvent, blocking or with CKF_DONT_BLOCK,
//!   reports every hide or show of a token; `false` forwards it to the real module.
//!
//! # Layout
//!
//! - `ffi`: the C entry points (unsafe: C ABI).
//! - `ptr`: the raw-pointer reads and writes (unsafe, small, each with its contract).
//! - `real`: loading the real module and calling it (unsafe: dlopen and C calls).
//! - `plan`, `state`, `rewrite`, `log`, `names`: safe code.

mod ffi;
mod log;
mod names;
mod plan;
mod ptr;
mod real;
mod rewrite;
mod state;

pub use ffi::C_GetFunctionList;
