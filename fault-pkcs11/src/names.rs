//! Names of PKCS#11 functions, return values and token flags, for plans and the call log.

use cryptoki_sys as sys;

/// Every function of CK_FUNCTION_LIST (PKCS#11 2.40), in table order.
pub(crate) const FUNCTIONS: [&str; 68] = [
    "C_Initialize",
    "C_Finalize",
    "C_GetInfo",
    "C_GetFunctionList",
    "C_GetSlotList",
    "C_GetSlotInfo",
    "C_GetTokenInfo",
    "C_GetMechanismList",
    "C_GetMechanismInfo",
    "C_InitToken",
    "C_InitPIN",
    "C_SetPIN",
    "C_OpenSession",
    "C_CloseSession",
    "C_CloseAllSessions",
    "C_GetSessionInfo",
    "C_GetOperationState",
    "C_SetOperationState",
    "C_Login",
    "C_Logout",
    "C_CreateObject",
    "C_CopyObject",
    "C_DestroyObject",
    "C_GetObjectSize",
    "C_GetAttributeValue",
    "C_SetAttributeValue",
    "C_FindObjectsInit",
    "C_FindObjects",
    "C_FindObjectsFinal",
    "C_EncryptInit",
    "C_Encrypt",
    "C_EncryptUpdate",
    "C_EncryptFinal",
    "C_DecryptInit",
    "C_Decrypt",
    "C_DecryptUpdate",
    "C_DecryptFinal",
    "C_DigestInit",
    "C_Digest",
    "C_DigestUpdate",
    "C_DigestKey",
    "C_DigestFinal",
    "C_SignInit",
    "C_Sign",
    "C_SignUpdate",
    "C_SignFinal",
    "C_SignRecoverInit",
    "C_SignRecover",
    "C_VerifyInit",
    "C_Verify",
    "C_VerifyUpdate",
    "C_VerifyFinal",
    "C_VerifyRecoverInit",
    "C_VerifyRecover",
    "C_DigestEncryptUpdate",
    "C_DecryptDigestUpdate",
    "C_SignEncryptUpdate",
    "C_DecryptVerifyUpdate",
    "C_GenerateKey",
    "C_GenerateKeyPair",
    "C_WrapKey",
    "C_UnwrapKey",
    "C_DeriveKey",
    "C_SeedRandom",
    "C_GenerateRandom",
    "C_GetFunctionStatus",
    "C_CancelFunction",
    "C_WaitForSlotEvent",
];

/// Return values by name (every CKR_ constant cryptoki-sys defines).
const RETURN_VALUES: [(&str, u64); 105] = [
    ("CKR_OK", sys::CKR_OK),
    ("CKR_CANCEL", sys::CKR_CANCEL),
    ("CKR_HOST_MEMORY", sys::CKR_HOST_MEMORY),
    ("CKR_SLOT_ID_INVALID", sys::CKR_SLOT_ID_INVALID),
    ("CKR_GENERAL_ERROR", sys::CKR_GENERAL_ERROR),
    ("CKR_FUNCTION_FAILED", sys::CKR_FUNCTION_FAILED),
    ("CKR_ARGUMENTS_BAD", sys::CKR_ARGUMENTS_BAD),
    ("CKR_NO_EVENT", sys::CKR_NO_EVENT),
    (
        "CKR_NEED_TO_CREATE_THREADS",
        sys::CKR_NEED_TO_CREATE_THREADS,
    ),
    ("CKR_CANT_LOCK", sys::CKR_CANT_LOCK),
    ("CKR_ATTRIBUTE_READ_ONLY", sys::CKR_ATTRIBUTE_READ_ONLY),
    ("CKR_ATTRIBUTE_SENSITIVE", sys::CKR_ATTRIBUTE_SENSITIVE),
    (
        "CKR_ATTRIBUTE_TYPE_INVALID",
        sys::CKR_ATTRIBUTE_TYPE_INVALID,
    ),
    (
        "CKR_ATTRIBUTE_VALUE_INVALID",
        sys::CKR_ATTRIBUTE_VALUE_INVALID,
    ),
    ("CKR_ACTION_PROHIBITED", sys::CKR_ACTION_PROHIBITED),
    ("CKR_DATA_INVALID", sys::CKR_DATA_INVALID),
    ("CKR_DATA_LEN_RANGE", sys::CKR_DATA_LEN_RANGE),
    ("CKR_DEVICE_ERROR", sys::CKR_DEVICE_ERROR),
    ("CKR_DEVICE_MEMORY", sys::CKR_DEVICE_MEMORY),
    ("CKR_DEVICE_REMOVED", sys::CKR_DEVICE_REMOVED),
    (
        "CKR_ENCRYPTED_DATA_INVALID",
        sys::CKR_ENCRYPTED_DATA_INVALID,
    ),
    (
        "CKR_ENCRYPTED_DATA_LEN_RANGE",
        sys::CKR_ENCRYPTED_DATA_LEN_RANGE,
    ),
    ("CKR_AEAD_DECRYPT_FAILED", sys::CKR_AEAD_DECRYPT_FAILED),
    ("CKR_FUNCTION_CANCELED", sys::CKR_FUNCTION_CANCELED),
    ("CKR_FUNCTION_NOT_PARALLEL", sys::CKR_FUNCTION_NOT_PARALLEL),
    (
        "CKR_FUNCTION_NOT_SUPPORTED",
        sys::CKR_FUNCTION_NOT_SUPPORTED,
    ),
    ("CKR_KEY_HANDLE_INVALID", sys::CKR_KEY_HANDLE_INVALID),
    ("CKR_KEY_SIZE_RANGE", sys::CKR_KEY_SIZE_RANGE),
    ("CKR_KEY_TYPE_INCONSISTENT", sys::CKR_KEY_TYPE_INCONSISTENT),
    ("CKR_KEY_NOT_NEEDED", sys::CKR_KEY_NOT_NEEDED),
    ("CKR_KEY_CHANGED", sys::CKR_KEY_CHANGED),
    ("CKR_KEY_NEEDED", sys::CKR_KEY_NEEDED),
    ("CKR_KEY_INDIGESTIBLE", sys::CKR_KEY_INDIGESTIBLE),
    (
        "CKR_KEY_FUNCTION_NOT_PERMITTED",
        sys::CKR_KEY_FUNCTION_NOT_PERMITTED,
    ),
    ("CKR_KEY_NOT_WRAPPABLE", sys::CKR_KEY_NOT_WRAPPABLE),
    ("CKR_KEY_UNEXTRACTABLE", sys::CKR_KEY_UNEXTRACTABLE),
    ("CKR_MECHANISM_INVALID", sys::CKR_MECHANISM_INVALID),
    (
        "CKR_MECHANISM_PARAM_INVALID",
        sys::CKR_MECHANISM_PARAM_INVALID,
    ),
    ("CKR_OBJECT_HANDLE_INVALID", sys::CKR_OBJECT_HANDLE_INVALID),
    ("CKR_OPERATION_ACTIVE", sys::CKR_OPERATION_ACTIVE),
    (
        "CKR_OPERATION_NOT_INITIALIZED",
        sys::CKR_OPERATION_NOT_INITIALIZED,
    ),
    ("CKR_PIN_INCORRECT", sys::CKR_PIN_INCORRECT),
    ("CKR_PIN_INVALID", sys::CKR_PIN_INVALID),
    ("CKR_PIN_LEN_RANGE", sys::CKR_PIN_LEN_RANGE),
    ("CKR_PIN_EXPIRED", sys::CKR_PIN_EXPIRED),
    ("CKR_PIN_LOCKED", sys::CKR_PIN_LOCKED),
    ("CKR_SESSION_CLOSED", sys::CKR_SESSION_CLOSED),
    ("CKR_SESSION_COUNT", sys::CKR_SESSION_COUNT),
    (
        "CKR_SESSION_HANDLE_INVALID",
        sys::CKR_SESSION_HANDLE_INVALID,
    ),
    (
        "CKR_SESSION_PARALLEL_NOT_SUPPORTED",
        sys::CKR_SESSION_PARALLEL_NOT_SUPPORTED,
    ),
    ("CKR_SESSION_READ_ONLY", sys::CKR_SESSION_READ_ONLY),
    ("CKR_SESSION_EXISTS", sys::CKR_SESSION_EXISTS),
    (
        "CKR_SESSION_READ_ONLY_EXISTS",
        sys::CKR_SESSION_READ_ONLY_EXISTS,
    ),
    (
        "CKR_SESSION_READ_WRITE_SO_EXISTS",
        sys::CKR_SESSION_READ_WRITE_SO_EXISTS,
    ),
    ("CKR_SIGNATURE_INVALID", sys::CKR_SIGNATURE_INVALID),
    ("CKR_SIGNATURE_LEN_RANGE", sys::CKR_SIGNATURE_LEN_RANGE),
    ("CKR_TEMPLATE_INCOMPLETE", sys::CKR_TEMPLATE_INCOMPLETE),
    ("CKR_TEMPLATE_INCONSISTENT", sys::CKR_TEMPLATE_INCONSISTENT),
    ("CKR_TOKEN_NOT_PRESENT", sys::CKR_TOKEN_NOT_PRESENT),
    ("CKR_TOKEN_NOT_RECOGNIZED", sys::CKR_TOKEN_NOT_RECOGNIZED),
    ("CKR_TOKEN_WRITE_PROTECTED", sys::CKR_TOKEN_WRITE_PROTECTED),
    (
        "CKR_UNWRAPPING_KEY_HANDLE_INVALID",
        sys::CKR_UNWRAPPING_KEY_HANDLE_INVALID,
    ),
    (
        "CKR_UNWRAPPING_KEY_SIZE_RANGE",
        sys::CKR_UNWRAPPING_KEY_SIZE_RANGE,
    ),
    (
        "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT",
        sys::CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
    ),
    (
        "CKR_USER_ALREADY_LOGGED_IN",
        sys::CKR_USER_ALREADY_LOGGED_IN,
    ),
    ("CKR_USER_NOT_LOGGED_IN", sys::CKR_USER_NOT_LOGGED_IN),
    (
        "CKR_USER_PIN_NOT_INITIALIZED",
        sys::CKR_USER_PIN_NOT_INITIALIZED,
    ),
    ("CKR_USER_TYPE_INVALID", sys::CKR_USER_TYPE_INVALID),
    (
        "CKR_USER_ANOTHER_ALREADY_LOGGED_IN",
        sys::CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
    ),
    ("CKR_USER_TOO_MANY_TYPES", sys::CKR_USER_TOO_MANY_TYPES),
    ("CKR_WRAPPED_KEY_INVALID", sys::CKR_WRAPPED_KEY_INVALID),
    ("CKR_WRAPPED_KEY_LEN_RANGE", sys::CKR_WRAPPED_KEY_LEN_RANGE),
    (
        "CKR_WRAPPING_KEY_HANDLE_INVALID",
        sys::CKR_WRAPPING_KEY_HANDLE_INVALID,
    ),
    (
        "CKR_WRAPPING_KEY_SIZE_RANGE",
        sys::CKR_WRAPPING_KEY_SIZE_RANGE,
    ),
    (
        "CKR_WRAPPING_KEY_TYPE_INCONSISTENT",
        sys::CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
    ),
    (
        "CKR_RANDOM_SEED_NOT_SUPPORTED",
        sys::CKR_RANDOM_SEED_NOT_SUPPORTED,
    ),
    ("CKR_RANDOM_NO_RNG", sys::CKR_RANDOM_NO_RNG),
    ("CKR_DOMAIN_PARAMS_INVALID", sys::CKR_DOMAIN_PARAMS_INVALID),
    ("CKR_CURVE_NOT_SUPPORTED", sys::CKR_CURVE_NOT_SUPPORTED),
    ("CKR_BUFFER_TOO_SMALL", sys::CKR_BUFFER_TOO_SMALL),
    ("CKR_SAVED_STATE_INVALID", sys::CKR_SAVED_STATE_INVALID),
    ("CKR_INFORMATION_SENSITIVE", sys::CKR_INFORMATION_SENSITIVE),
    ("CKR_STATE_UNSAVEABLE", sys::CKR_STATE_UNSAVEABLE),
    (
        "CKR_CRYPTOKI_NOT_INITIALIZED",
        sys::CKR_CRYPTOKI_NOT_INITIALIZED,
    ),
    (
        "CKR_CRYPTOKI_ALREADY_INITIALIZED",
        sys::CKR_CRYPTOKI_ALREADY_INITIALIZED,
    ),
    ("CKR_MUTEX_BAD", sys::CKR_MUTEX_BAD),
    ("CKR_MUTEX_NOT_LOCKED", sys::CKR_MUTEX_NOT_LOCKED),
    ("CKR_NEW_PIN_MODE", sys::CKR_NEW_PIN_MODE),
    ("CKR_NEXT_OTP", sys::CKR_NEXT_OTP),
    (
        "CKR_EXCEEDED_MAX_ITERATIONS",
        sys::CKR_EXCEEDED_MAX_ITERATIONS,
    ),
    ("CKR_FIPS_SELF_TEST_FAILED", sys::CKR_FIPS_SELF_TEST_FAILED),
    ("CKR_LIBRARY_LOAD_FAILED", sys::CKR_LIBRARY_LOAD_FAILED),
    ("CKR_PIN_TOO_WEAK", sys::CKR_PIN_TOO_WEAK),
    ("CKR_PUBLIC_KEY_INVALID", sys::CKR_PUBLIC_KEY_INVALID),
    ("CKR_FUNCTION_REJECTED", sys::CKR_FUNCTION_REJECTED),
    (
        "CKR_TOKEN_RESOURCE_EXCEEDED",
        sys::CKR_TOKEN_RESOURCE_EXCEEDED,
    ),
    (
        "CKR_OPERATION_CANCEL_FAILED",
        sys::CKR_OPERATION_CANCEL_FAILED,
    ),
    ("CKR_KEY_EXHAUSTED", sys::CKR_KEY_EXHAUSTED),
    ("CKR_PENDING", sys::CKR_PENDING),
    (
        "CKR_SESSION_ASYNC_NOT_SUPPORTED",
        sys::CKR_SESSION_ASYNC_NOT_SUPPORTED,
    ),
    ("CKR_SEED_RANDOM_REQUIRED", sys::CKR_SEED_RANDOM_REQUIRED),
    (
        "CKR_OPERATION_NOT_VALIDATED",
        sys::CKR_OPERATION_NOT_VALIDATED,
    ),
    ("CKR_TOKEN_NOT_INITIALIZED", sys::CKR_TOKEN_NOT_INITIALIZED),
    (
        "CKR_PARAMETER_SET_NOT_SUPPORTED",
        sys::CKR_PARAMETER_SET_NOT_SUPPORTED,
    ),
    ("CKR_VENDOR_DEFINED", sys::CKR_VENDOR_DEFINED),
];

/// Token flags by name.
const TOKEN_FLAGS: [(&str, u64); 18] = [
    ("CKF_RNG", sys::CKF_RNG),
    ("CKF_WRITE_PROTECTED", sys::CKF_WRITE_PROTECTED),
    ("CKF_LOGIN_REQUIRED", sys::CKF_LOGIN_REQUIRED),
    ("CKF_USER_PIN_INITIALIZED", sys::CKF_USER_PIN_INITIALIZED),
    (
        "CKF_RESTORE_KEY_NOT_NEEDED",
        sys::CKF_RESTORE_KEY_NOT_NEEDED,
    ),
    ("CKF_CLOCK_ON_TOKEN", sys::CKF_CLOCK_ON_TOKEN),
    (
        "CKF_PROTECTED_AUTHENTICATION_PATH",
        sys::CKF_PROTECTED_AUTHENTICATION_PATH,
    ),
    (
        "CKF_DUAL_CRYPTO_OPERATIONS",
        sys::CKF_DUAL_CRYPTO_OPERATIONS,
    ),
    ("CKF_TOKEN_INITIALIZED", sys::CKF_TOKEN_INITIALIZED),
    (
        "CKF_SECONDARY_AUTHENTICATION",
        sys::CKF_SECONDARY_AUTHENTICATION,
    ),
    ("CKF_USER_PIN_COUNT_LOW", sys::CKF_USER_PIN_COUNT_LOW),
    ("CKF_USER_PIN_FINAL_TRY", sys::CKF_USER_PIN_FINAL_TRY),
    ("CKF_USER_PIN_LOCKED", sys::CKF_USER_PIN_LOCKED),
    (
        "CKF_USER_PIN_TO_BE_CHANGED",
        sys::CKF_USER_PIN_TO_BE_CHANGED,
    ),
    ("CKF_SO_PIN_COUNT_LOW", sys::CKF_SO_PIN_COUNT_LOW),
    ("CKF_SO_PIN_FINAL_TRY", sys::CKF_SO_PIN_FINAL_TRY),
    ("CKF_SO_PIN_LOCKED", sys::CKF_SO_PIN_LOCKED),
    ("CKF_SO_PIN_TO_BE_CHANGED", sys::CKF_SO_PIN_TO_BE_CHANGED),
];

/// The value of the return value `name` (`CKR_DEVICE_REMOVED`).
pub(crate) fn rv_value(name: &str) -> Option<u64> {
    RETURN_VALUES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
}

/// The name of return value `rv`, or its hex number when it has none.
pub(crate) fn rv_name(rv: u64) -> String {
    RETURN_VALUES
        .iter()
        .find(|(_, v)| *v == rv)
        .map_or_else(|| format!("{rv:#x}"), |(n, _)| (*n).to_owned())
}

/// The value of the token flag `name` (`CKF_USER_PIN_COUNT_LOW`).
pub(crate) fn token_flag(name: &str) -> Option<u64> {
    TOKEN_FLAGS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_round_trip() {
        assert_eq!(rv_value("CKR_DEVICE_REMOVED"), Some(0x32));
        assert_eq!(rv_name(0x32), "CKR_DEVICE_REMOVED");
        assert_eq!(rv_name(0x8000_0001), "0x80000001");
        assert_eq!(token_flag("CKF_USER_PIN_COUNT_LOW"), Some(0x10000));
        assert!(FUNCTIONS.contains(&"C_WaitForSlotEvent"));
    }
}
