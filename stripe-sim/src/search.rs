//! A subset of Stripe's search query language, enough to find PaymentIntents:
//! `metadata['key']:'value'`, `status:'succeeded'`, `currency:'usd'`, `amount:2000`,
//! joined with `AND`. Single or double quotes.

use crate::intent::PaymentIntent;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Clause {
    Metadata(String, String),
    Status(String),
    Currency(String),
    Amount(i64),
}

impl Clause {
    pub fn matches(&self, pi: &PaymentIntent) -> bool {
        match self {
            Self::Metadata(k, v) => pi.metadata.get(k) == Some(v),
            Self::Status(s) => pi.status == s,
            Self::Currency(c) => pi.currency.eq_ignore_ascii_case(c),
            Self::Amount(a) => pi.amount == *a,
        }
    }
}

/// Parses a query; the error is the message for a 400.
pub fn parse(query: &str) -> Result<Vec<Clause>, String> {
    let query = query.trim();
    if query.is_empty() {
        return Err("The query can't be empty.".to_owned());
    }
    let mut clauses = Vec::new();
    let mut rest = query;
    loop {
        let (clause, after) = parse_clause(rest)?;
        clauses.push(clause);
        let after = after.trim_start();
        if after.is_empty() {
            return Ok(clauses);
        }
        rest = after
            .strip_prefix("AND ")
            .ok_or_else(|| {
                format!("Unsupported search query near '{after}': only AND is supported.")
            })?
            .trim_start();
    }
}

/// Reads `'...'` or `"..."` at the start of `s`; returns the content and what follows.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let quote = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let body = &s[1..];
    let end = body.find(quote)?;
    Some((&body[..end], &body[end + 1..]))
}

fn parse_clause(s: &str) -> Result<(Clause, &str), String> {
    let bad = || format!("Unsupported search query: '{s}'.");
    if let Some(rest) = s.strip_prefix("metadata[") {
        let (key, rest) = quoted(rest).ok_or_else(bad)?;
        let rest = rest.strip_prefix("]:").ok_or_else(bad)?;
        let (value, rest) = quoted(rest).ok_or_else(bad)?;
        return Ok((Clause::Metadata(key.to_owned(), value.to_owned()), rest));
    }
    let (field, rest) = s.split_once(':').ok_or_else(bad)?;
    let (value, rest) = match quoted(rest) {
        Some(found) => found,
        // Unquoted values run to the next space (numbers: `amount:2000`).
        None => rest.split_at(rest.find(' ').unwrap_or(rest.len())),
    };
    let clause = match field {
        "status" => Clause::Status(value.to_owned()),
        "currency" => Clause::Currency(value.to_owned()),
        "amount" => Clause::Amount(value.parse().map_err(|_| bad())?),
        _ => return Err(format!("Field '{field}' is an unsupported search field.")),
    };
    Ok((clause, rest))
}

#[cfg(test)]
// Test code: a failed unwrap is a failed test.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn metadata_with_either_quote() {
        let want = vec![Clause::Metadata("transaction_id".into(), "tx 1".into())];
        assert_eq!(parse("metadata['transaction_id']:'tx 1'").unwrap(), want);
        assert_eq!(
            parse("metadata[\"transaction_id\"]:\"tx 1\"").unwrap(),
            want
        );
    }

    #[test]
    fn conjunctions_and_errors() {
        assert_eq!(
            parse("status:'succeeded' AND amount:2000 AND currency:\"usd\"").unwrap(),
            vec![
                Clause::Status("succeeded".into()),
                Clause::Amount(2000),
                Clause::Currency("usd".into())
            ]
        );
        assert!(parse("").is_err());
        assert!(parse("metadata['a']:'b' OR status:'x'").is_err());
        assert!(parse("customer:'cus_1'").is_err());
        assert!(parse("metadata['a':'b'").is_err());
    }
}
