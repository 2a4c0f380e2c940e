//! SSHSIG signatures of orders (OpenSSH's `PROTOCOL.sshsig`, as `ssh-keygen -Y sign` and git
//! make them).
//!
//! # Signature file layout
//!
//! `FILE.sig` holds one or more armored blocks, each
//! `-----BEGIN SSH SIGNATURE-----` … `-----END SSH SIGNATURE-----`, one after the other
//! (text between blocks is ignored). One block is exactly what `ssh-keygen -Y sign` writes; a
//! second signer appends theirs (`custody order sign` appends, or
//! `ssh-keygen -Y sign -f KEY -n custody-order < FILE >> FILE.sig`). At most
//! [`super::MAX_SIGNATURES`] blocks are read.

use std::collections::BTreeSet;

use ssh_key::{HashAlg, LineEnding, PrivateKey, SshSig};
use time::OffsetDateTime;

use super::{
    AllowedSigners, RejectCode, Rejection, SignatureCheck, Signer, MAX_SIGNATURES, NAMESPACE,
};
use crate::error::{Error, Result};

const BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const END: &str = "-----END SSH SIGNATURE-----";

/// Splits a signature file into its armored blocks (each including its BEGIN/END lines).
/// Returns `Err` with the text of a block without its END line.
pub fn split_blocks(text: &str) -> std::result::Result<Vec<&str>, Rejection> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start..];
        let Some(end) = after.find(END) else {
            return Err(Rejection::new(
                RejectCode::SignatureMalformed,
                format!(
                    "signature block {} has no END line; the signature file is truncated",
                    out.len() + 1
                ),
            ));
        };
        out.push(&after[..end + END.len()]);
        rest = &after[end + END.len()..];
    }
    Ok(out)
}

/// Checks every signature block against the order bytes. Returns one entry per block and the
/// distinct allowed signers whose signature is valid: keys are counted once, and keys that
/// share a principal count as one signer (one person with two keys is still one person).
pub(super) fn check_all(
    message: &[u8],
    signatures: &[u8],
    allowed: &AllowedSigners,
    now: OffsetDateTime,
) -> (Vec<SignatureCheck>, Vec<Signer>) {
    let mut checks = Vec::new();
    let Ok(text) = std::str::from_utf8(signatures) else {
        checks.push(problem(
            1,
            RejectCode::SignatureMalformed,
            "the signature file is not text; expected armored SSH SIGNATURE blocks".into(),
        ));
        return (checks, Vec::new());
    };
    let blocks = match split_blocks(text) {
        Ok(b) => b,
        Err(r) => {
            checks.push(SignatureCheck {
                index: 1,
                key_fingerprint: None,
                namespace: None,
                signer: None,
                valid: false,
                problem: Some(r),
            });
            return (checks, Vec::new());
        }
    };
    let mut signers: Vec<(Signer, BTreeSet<String>)> = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let index = i + 1;
        if index > MAX_SIGNATURES {
            checks.push(problem(
                index,
                RejectCode::SignatureMalformed,
                format!("more than {MAX_SIGNATURES} signatures; the rest were not read"),
            ));
            break;
        }
        let check = check_one(index, message, block, allowed, now);
        if let (true, Some(signer)) = (check.valid, &check.signer) {
            let principals: BTreeSet<String> = split_principals(&signer.principals);
            let same_person = signers.iter().any(|(s, p)| {
                s.key_fingerprint == signer.key_fingerprint || !p.is_disjoint(&principals)
            });
            if !same_person {
                signers.push((signer.clone(), principals));
            }
        }
        checks.push(check);
    }
    (checks, signers.into_iter().map(|(s, _)| s).collect())
}

fn split_principals(principals: &str) -> BTreeSet<String> {
    principals
        .split(',')
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

fn problem(index: usize, code: RejectCode, message: String) -> SignatureCheck {
    SignatureCheck {
        index,
        key_fingerprint: None,
        namespace: None,
        signer: None,
        valid: false,
        problem: Some(Rejection::new(code, message)),
    }
}

fn check_one(
    index: usize,
    message: &[u8],
    block: &str,
    allowed: &AllowedSigners,
    now: OffsetDateTime,
) -> SignatureCheck {
    let sig = match SshSig::from_pem(block) {
        Ok(s) => s,
        Err(e) => {
            return problem(
                index,
                RejectCode::SignatureMalformed,
                format!("signature {index} does not parse ({e}); the signature file is damaged"),
            )
        }
    };
    let fingerprint = ssh_key::PublicKey::from(sig.public_key().clone())
        .fingerprint(HashAlg::Sha256)
        .to_string();
    let mut check = SignatureCheck {
        index,
        key_fingerprint: Some(fingerprint.clone()),
        namespace: Some(sig.namespace().to_owned()),
        signer: None,
        valid: false,
        problem: None,
    };
    let fail = |mut c: SignatureCheck, code, m: String| {
        c.problem = Some(Rejection::new(code, m));
        c
    };
    if sig.namespace() != NAMESPACE {
        return fail(
            check,
            RejectCode::WrongNamespace,
            format!(
                "signature {index} was made for namespace {:?}, not {NAMESPACE:?}; sign with `ssh-keygen -Y sign -n {NAMESPACE}`",
                crate::id::escape_text(sig.namespace())
            ),
        );
    }
    let candidates = allowed.for_key(sig.public_key());
    if candidates.is_empty() {
        return fail(
            check,
            RejectCode::UnknownSigner,
            format!(
                "signature {index} is by key {fingerprint}, which is not in allowed_signers ({}); only listed signers may order a wipe",
                allowed.source()
            ),
        );
    }
    let mut reasons = Vec::new();
    let mut entry = None;
    for c in &candidates {
        match c.allows(NAMESPACE, now) {
            Ok(()) => {
                entry = Some(*c);
                break;
            }
            Err(why) => reasons.push(format!("line {}: {why}", c.line)),
        }
    }
    let Some(entry) = entry else {
        return fail(
            check,
            RejectCode::SignerNotAllowed,
            format!(
                "signature {index} is by key {fingerprint}, whose allowed_signers entry does not allow it now ({})",
                reasons.join("; ")
            ),
        );
    };
    let signer = Signer {
        principals: entry.principals.clone(),
        key_fingerprint: fingerprint.clone(),
        line: entry.line,
    };
    check.signer = Some(signer);
    if let Err(e) = entry.key.verify(NAMESPACE, message, &sig) {
        tracing::debug!(cause = %e, index, "signature does not verify");
        return fail(
            check,
            RejectCode::SignatureInvalid,
            format!(
                "signature {index} by {} ({fingerprint}) does not match this order: the order was altered or the signature forged",
                entry.principals
            ),
        );
    }
    check.valid = true;
    check
}

/// Signs `message` with an unencrypted OpenSSH private key, in the order namespace with
/// SHA-512 (what `ssh-keygen -Y sign` does). Returns the armored block and the key's
/// fingerprint.
pub fn sign(private_key_pem: &str, message: &[u8]) -> Result<(String, String)> {
    let key = PrivateKey::from_openssh(private_key_pem)
        .map_err(|e| Error::Refused(format!("not an OpenSSH private key: {e}")))?;
    if key.is_encrypted() {
        return Err(Error::Refused(
            "the key is protected by a passphrase; sign with `ssh-keygen -Y sign -f KEY -n custody-order FILE` instead".into(),
        ));
    }
    let sig = key
        .sign(NAMESPACE, HashAlg::Sha512, message)
        .map_err(|e| Error::Refused(format!("signing failed: {e}")))?;
    let pem = sig
        .to_pem(LineEnding::LF)
        .map_err(|e| Error::Refused(format!("encoding the signature failed: {e}")))?;
    let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
    Ok((pem, fingerprint))
}
