//! Money: amounts are `i64` minor units (cents), currencies a closed set, and the price list
//! (`PRICES`) that fixes what an unauthenticated browser may buy.

use std::collections::BTreeMap;

/// Currencies we accept; the set Stripe settles in that our merchants asked for. Amounts are
/// always in the currency's minor unit (for the zero-decimal ones, such as JPY, the unit itself).
pub const SUPPORTED_CURRENCIES: &[&str] = &[
    "usd", "eur", "gbp", "cad", "aud", "chf", "jpy", "sek", "nok", "dkk",
];

/// Largest single charge we take: Stripe's own cap is 99,999,999 minor units for most currencies.
pub const MAX_AMOUNT: i64 = 99_999_999;

/// Smallest charge; Stripe rejects charges below about 50 cents, but we leave that to it.
pub const MIN_AMOUNT: i64 = 1;

pub fn is_supported_currency(code: &str) -> bool {
    SUPPORTED_CURRENCIES.contains(&code)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Price {
    pub amount: i64,
    pub currency: String,
}

/// The price list, e.g. `basic=1000:usd,pro=2500:eur`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prices(BTreeMap<String, Price>);

impl Prices {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, rest) = item
                .split_once('=')
                .ok_or_else(|| format!("price `{item}` is not name=amount:currency"))?;
            let (amount, currency) = rest
                .split_once(':')
                .ok_or_else(|| format!("price `{item}` is not name=amount:currency"))?;
            let amount: i64 = amount
                .trim()
                .parse()
                .map_err(|_| format!("price `{name}` has a non-integer amount"))?;
            let currency = currency.trim().to_ascii_lowercase();
            if !(MIN_AMOUNT..=MAX_AMOUNT).contains(&amount) {
                return Err(format!("price `{name}` amount is out of range"));
            }
            if !is_supported_currency(&currency) {
                return Err(format!(
                    "price `{name}` has unsupported currency `{currency}`"
                ));
            }
            map.insert(name.trim().to_owned(), Price { amount, currency });
        }
        if map.is_empty() {
            return Err("PRICES lists no price".into());
        }
        Ok(Self(map))
    }

    pub fn get(&self, name: &str) -> Option<&Price> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Price)> {
        self.0.iter()
    }

    /// The first price by name: what `/` shows when no price is named.
    pub fn default_name(&self) -> Option<&str> {
        self.0.keys().next().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_price_list() {
        let p = Prices::parse("basic=1000:usd, pro=2500:EUR").unwrap();
        assert_eq!(p.get("basic").unwrap().amount, 1000);
        assert_eq!(p.get("pro").unwrap().currency, "eur");
        assert!(p.get("gold").is_none());
    }

    #[test]
    fn rejects_malformed_price_lists() {
        for bad in [
            "",
            "basic",
            "basic=10",
            "basic=x:usd",
            "basic=0:usd",
            "basic=10:xyz",
        ] {
            assert!(Prices::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
