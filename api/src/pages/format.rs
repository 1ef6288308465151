//! Amounts in minor units, written as people read them, the way `Intl.NumberFormat('en-US')`
//! writes them in the page's script: `$10.00`, `€25.00`, `¥1,000`, `CHF 10.00`.

/// Currencies whose minor unit is the unit itself (Stripe's list): 1000 JPY is ¥1,000.
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

pub fn decimals(currency: &str) -> u32 {
    if ZERO_DECIMAL.contains(&currency.to_ascii_lowercase().as_str()) {
        0
    } else {
        2
    }
}

fn symbol(currency: &str) -> Option<&'static str> {
    Some(match currency {
        "usd" => "$",
        "eur" => "€",
        "gbp" => "£",
        "jpy" => "¥",
        "cad" => "CA$",
        "aud" => "A$",
        _ => return None,
    })
}

/// `1234567` → `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn format_amount(amount: i64, currency: &str) -> String {
    let code = currency.to_ascii_lowercase();
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    let number = match decimals(&code) {
        0 => grouped(abs),
        _ => format!("{}.{:02}", grouped(abs / 100), abs % 100),
    };
    match symbol(&code) {
        Some(s) => format!("{sign}{s}{number}"),
        None => format!("{sign}{} {number}", code.to_ascii_uppercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_decimal_currencies_show_cents() {
        assert_eq!(format_amount(1000, "usd"), "$10.00");
        assert_eq!(format_amount(2505, "EUR"), "€25.05");
        assert_eq!(format_amount(7, "gbp"), "£0.07");
        assert_eq!(format_amount(99_999_999, "usd"), "$999,999.99");
        assert_eq!(format_amount(1000, "chf"), "CHF 10.00");
    }

    #[test]
    fn zero_decimal_currencies_show_whole_units() {
        assert_eq!(format_amount(1000, "jpy"), "¥1,000");
        assert_eq!(format_amount(5, "jpy"), "¥5");
        assert_eq!(decimals("JPY"), 0);
        assert_eq!(decimals("usd"), 2);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
