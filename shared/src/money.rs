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
            // Found by the property test: `=10:usd` made a product with no name.
            if name.trim().is_empty() {
                return Err(format!("price `{item}` has no name"));
            }
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
            "=10:usd",
        ] {
            assert!(Prices::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn currency() -> impl Strategy<Value = &'static str> {
            proptest::sample::select(SUPPORTED_CURRENCIES)
        }

        proptest! {
            #[test]
            fn any_text_parses_or_is_refused_without_panicking(spec in ".{0,80}") {
                if let Ok(prices) = Prices::parse(&spec) {
                    for (name, price) in prices.iter() {
                        prop_assert!(!name.is_empty() && name.trim() == name);
                        prop_assert!((MIN_AMOUNT..=MAX_AMOUNT).contains(&price.amount));
                        prop_assert!(is_supported_currency(&price.currency));
                    }
                    prop_assert!(prices.default_name().is_some());
                }
            }

            #[test]
            fn a_written_price_list_reads_back(
                items in proptest::collection::btree_map(
                    "[a-z][a-z0-9_-]{0,11}",
                    (MIN_AMOUNT..=MAX_AMOUNT, currency()),
                    1..6,
                ),
                upper in any::<bool>(),
            ) {
                let spec = items
                    .iter()
                    .map(|(name, (amount, cur))| {
                        let cur = if upper { cur.to_uppercase() } else { (*cur).to_owned() };
                        format!(" {name} = {amount}:{cur} ")
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                let prices = Prices::parse(&spec).unwrap();
                for (name, (amount, cur)) in &items {
                    let got = prices.get(name).unwrap();
                    prop_assert_eq!(got.amount, *amount);
                    prop_assert_eq!(got.currency.as_str(), *cur);
                }
            }

            #[test]
            fn amounts_out_of_range_are_refused(amount in prop_oneof![i64::MIN..MIN_AMOUNT, (MAX_AMOUNT + 1)..i64::MAX]) {
                let spec = format!("p={amount}:usd");
                prop_assert!(Prices::parse(&spec).is_err());
            }
        }
    }
}
