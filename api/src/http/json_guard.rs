//! A pass over a JSON body before serde sees it: how deep it nests and how long its strings
//! are. serde_json stops at 128 levels on its own, but a request of ours is never more than
//! two deep, and a hostile one should get a clear 400 long before the parser is put to work;
//! strings beyond what any field can hold are refused the same way. Malformed JSON is left
//! for serde to describe.

/// What a body may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Objects and arrays inside one another.
    pub max_depth: usize,
    /// Bytes between a string's quotes, as sent (escapes count as written); `None`: any.
    pub max_string_bytes: Option<usize>,
}

/// Our own request bodies: flat objects of short strings and numbers.
pub const REQUEST: Limits = Limits {
    max_depth: 8,
    max_string_bytes: Some(1024),
};

/// Stripe's events nest objects a few levels deep and carry free text (descriptions,
/// metadata), so only the depth is bounded; the body limit bounds the rest.
pub const STRIPE_EVENT: Limits = Limits {
    max_depth: 32,
    max_string_bytes: None,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TooMuch {
    #[error("the JSON body nests deeper than {0} levels")]
    Depth(usize),
    #[error("a string in the JSON body is longer than {0} bytes")]
    String(usize),
}

/// Scans `body` once, byte by byte; never allocates.
pub fn check(body: &[u8], limits: Limits) -> Result<(), TooMuch> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut string_len = 0usize;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                continue;
            }
            string_len += 1;
            if let Some(max) = limits.max_string_bytes
                && string_len > max
            {
                return Err(TooMuch::String(max));
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                string_len = 0;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > limits.max_depth {
                    return Err(TooMuch::Depth(limits.max_depth));
                }
            }
            // Unbalanced closers are serde's to report.
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn flat_requests_pass() {
        let body = br#"{"price":"basic","email":"a@b.co","payment_method":"pm_card_visa"}"#;
        assert_eq!(check(body, REQUEST), Ok(()));
        assert_eq!(check(br#"{"a":"\"{{{{{{{{{{"}"#, REQUEST), Ok(()));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}{}", "[".repeat(9), "]".repeat(9));
        assert_eq!(check(deep.as_bytes(), REQUEST), Err(TooMuch::Depth(8)));
        let ok = format!("{}{}", "[".repeat(8), "]".repeat(8));
        assert_eq!(check(ok.as_bytes(), REQUEST), Ok(()));
    }

    #[test]
    fn long_strings_are_refused() {
        let long = format!(r#"{{"email":"{}"}}"#, "a".repeat(1025));
        assert_eq!(check(long.as_bytes(), REQUEST), Err(TooMuch::String(1024)));
        assert_eq!(check(long.as_bytes(), STRIPE_EVENT), Ok(()));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = check(&body, REQUEST);
        }

        #[test]
        fn nesting_past_the_limit_is_always_refused(extra in 1usize..200, open in prop_oneof![Just("["), Just("{\"a\":")]) {
            let body = open.repeat(REQUEST.max_depth + extra);
            prop_assert_eq!(check(body.as_bytes(), REQUEST), Err(TooMuch::Depth(REQUEST.max_depth)));
        }

        #[test]
        fn what_passes_parses_no_deeper_than_allowed(value in arb_json()) {
            let body = serde_json::to_vec(&value).unwrap();
            if check(&body, REQUEST).is_ok() {
                prop_assert!(depth(&value) <= REQUEST.max_depth);
            }
        }
    }

    fn depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,20}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(16, 64, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::hash_map("[a-z\"\\\\{]{0,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
