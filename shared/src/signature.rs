//! Stripe's webhook signature scheme, both ways: verifying the `Stripe-Signature` of Stripe's
//! events (the api), and signing our own events to the merchant (`Payments-Signature`, the
//! worker), so merchants reuse the verification code they have for Stripe's.
//!
//! Verification is exactly as Stripe's libraries do it: the header is
//! `t=<unix>,v1=<hex>[,v1=<hex>...]`, the signed payload is `"{t}.{raw body}"`, each `v1` is
//! a lowercase hex HMAC-SHA256 of it with the endpoint secret, any one matching is enough
//! (while a secret is rolled Stripe signs with both), the comparison takes constant time,
//! and a timestamp outside the tolerance is refused, so a captured delivery cannot be
//! replayed later.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A header with more parts than this is not Stripe's (it sends `t`, one `v1` per active
/// secret, and perhaps a `v0`); refusing it bounds the work an attacker can ask for.
const MAX_PARTS: usize = 16;

/// Why a delivery was refused. Logged, never told to the caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("malformed Stripe-Signature header")]
    Malformed,
    #[error("no v1 signature in the header")]
    NoSignature,
    #[error("timestamp outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// The parts of a `Stripe-Signature` header that matter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureHeader<'a> {
    /// `t` exactly as sent: the signed payload starts with these bytes.
    pub timestamp: &'a str,
    pub unix: i64,
    pub v1: Vec<[u8; 32]>,
}

/// Splits the header. Strict on purpose: no spaces, one `t`, `v1` in lowercase hex of the
/// right length; unknown schemes (`v0`) are skipped as Stripe's libraries skip them.
pub fn parse(header: &str) -> Result<SignatureHeader<'_>, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for (i, part) in header.split(',').enumerate() {
        if i >= MAX_PARTS {
            return Err(SignatureError::Malformed);
        }
        let (key, value) = part.split_once('=').ok_or(SignatureError::Malformed)?;
        match key {
            "t" if timestamp.is_none() => timestamp = Some(value),
            "t" => return Err(SignatureError::Malformed),
            "v1" => v1.push(decode_lower_hex(value).ok_or(SignatureError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed);
    }
    let unix = timestamp.parse().map_err(|_| SignatureError::Malformed)?;
    if v1.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    Ok(SignatureHeader {
        timestamp,
        unix,
        v1,
    })
}

/// Exactly 64 lowercase hex digits; uppercase is refused so that a header differing by one
/// byte from a valid one never verifies.
fn decode_lower_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// `None` only if the HMAC refused the key, which it never does (any length is fine).
fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// Checks `header` against `body` with `secret`, at time `now` (Unix seconds).
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &[u8],
    tolerance: Duration,
    now: i64,
) -> Result<(), SignatureError> {
    let header = parse(header.ok_or(SignatureError::Missing)?)?;
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    // Too old is a replay; too far ahead is a clock we cannot trust either.
    if now.saturating_sub(header.unix) > tolerance || header.unix.saturating_sub(now) > tolerance {
        return Err(SignatureError::Stale);
    }
    if secret.is_empty() {
        return Err(SignatureError::Mismatch);
    }
    let expected = mac(secret, header.timestamp, body).ok_or(SignatureError::Mismatch)?;
    // `verify_slice` compares in constant time; every candidate is checked, so the time
    // taken does not tell which one (if any) matched.
    let matched = header.v1.iter().fold(false, |ok, sig| {
        expected.clone().verify_slice(sig).is_ok() | ok
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The header for `body` signed at time `t` (Unix seconds): what Stripe sends, and what the
/// merchant's webhooks carry.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let tag = mac(secret, &t.to_string(), body)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("t={t},v1={tag}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"whsec_test_secret";
    const FIVE_MIN: Duration = Duration::from_secs(300);
    const NOW: i64 = 1_700_000_000;

    #[test]
    fn matches_stripes_reference_signature() {
        // HMAC-SHA256("whsec_test", "1700000000.{}"), computed with Python's hmac module.
        assert_eq!(
            sign(b"whsec_test", NOW, b"{}"),
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }

    #[test]
    fn any_of_several_signatures_is_enough() {
        let good = sign(SECRET, NOW, b"{}");
        let v1 = good.split_once(",v1=").unwrap().1;
        let other = "0".repeat(64);
        let header = format!("t={NOW},v1={other},v0=abc,v1={v1}");
        assert_eq!(verify(Some(&header), b"{}", SECRET, FIVE_MIN, NOW), Ok(()));
    }

    #[test]
    fn refuses_stale_missing_and_malformed_headers() {
        let old = sign(SECRET, NOW - 301, b"{}");
        assert_eq!(
            verify(Some(&old), b"{}", SECRET, FIVE_MIN, NOW),
            Err(SignatureError::Stale)
        );
        let future = sign(SECRET, NOW + 301, b"{}");
        assert_eq!(
            verify(Some(&future), b"{}", SECRET, FIVE_MIN, NOW),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(None, b"{}", SECRET, FIVE_MIN, NOW),
            Err(SignatureError::Missing)
        );
        for bad in [
            "",
            "t=",
            "v1=ab",
            "t=1,t=2,v1=00",
            "t=-5,v1=00",
            "t=1, v1=00",
        ] {
            assert!(
                verify(Some(bad), b"{}", SECRET, FIVE_MIN, NOW).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            verify(Some(&format!("t={NOW}")), b"{}", SECRET, FIVE_MIN, NOW),
            Err(SignatureError::NoSignature)
        );
        let upper = sign(SECRET, NOW, b"{}")
            .to_uppercase()
            .replace("T=", "t=")
            .replace("V1=", "v1=");
        assert!(verify(Some(&upper), b"{}", SECRET, FIVE_MIN, NOW).is_err());
    }

    #[test]
    fn a_wrong_secret_fails() {
        let header = sign(b"whsec_other", NOW, b"{}");
        assert_eq!(
            verify(Some(&header), b"{}", SECRET, FIVE_MIN, NOW),
            Err(SignatureError::Mismatch)
        );
        assert!(verify(Some(&header), b"{}", b"", FIVE_MIN, NOW).is_err());
    }

    proptest! {
        #[test]
        fn a_valid_signature_always_verifies(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            secret in proptest::collection::vec(any::<u8>(), 1..64),
            t in 0i64..4_000_000_000,
            skew in -300i64..=300,
        ) {
            let header = sign(&secret, t, &body);
            prop_assert_eq!(verify(Some(&header), &body, &secret, FIVE_MIN, t + skew), Ok(()));
        }

        #[test]
        fn any_single_byte_change_to_the_body_fails(
            body in proptest::collection::vec(any::<u8>(), 1..512),
            index in any::<proptest::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let header = sign(SECRET, NOW, &body);
            let mut changed = body.clone();
            let i = index.index(changed.len());
            changed[i] ^= flip;
            prop_assert!(verify(Some(&header), &changed, SECRET, FIVE_MIN, NOW).is_err());
        }

        #[test]
        fn any_single_byte_change_to_the_signature_fails(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            index in any::<proptest::sample::Index>(),
            replacement in any::<u8>(),
        ) {
            let header = sign(SECRET, NOW, &body).into_bytes();
            let i = index.index(header.len());
            prop_assume!(header[i] != replacement);
            let mut changed = header.clone();
            changed[i] = replacement;
            // Not UTF-8 any more: no header at all as far as the handler is concerned.
            if let Ok(changed) = String::from_utf8(changed) {
                prop_assert!(verify(Some(&changed), &body, SECRET, FIVE_MIN, NOW).is_err());
            }
        }

        #[test]
        fn arbitrary_headers_never_panic(header in ".{0,200}", body in ".{0,64}") {
            let _ = verify(Some(&header), body.as_bytes(), SECRET, FIVE_MIN, NOW);
        }
    }
}
