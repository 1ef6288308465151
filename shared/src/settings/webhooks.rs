//! Where the merchant's webhooks go and how hard we try (`MERCHANT_WEBHOOK_*`).

use std::time::Duration;

use super::{SettingsError, Vars};
use crate::secret::Secret;

#[derive(Clone, Debug)]
pub struct MerchantWebhookSettings {
    /// `MERCHANT_WEBHOOK_URL`, comma-separated; empty: no webhooks.
    pub urls: Vec<String>,
    /// `MERCHANT_WEBHOOK_SECRET`: signs every delivery (`Payments-Signature`).
    pub secret: Option<Secret>,
    /// How long an event is retried before its delivery is given up (`MERCHANT_WEBHOOK_MAX_AGE`,
    /// `3d`, `72h`, `90m`, or seconds).
    pub max_age: Duration,
    /// The first retry's delay, doubled each time up to `retry_max` (with jitter).
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// One attempt's timeout.
    pub timeout: Duration,
    /// How often an idle sender looks for due deliveries.
    pub poll_interval: Duration,
    /// Deliveries in flight per endpoint per worker.
    pub concurrency: usize,
}

/// `3d`, `72h`, `90m`, `30s`, or plain seconds.
pub(super) fn parse_duration(name: &str, text: &str) -> Result<Duration, SettingsError> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number.parse().map_err(|_| {
        SettingsError(format!(
            "{name}=`{text}` is not a duration (3d, 72h, 90m, 30s)"
        ))
    })?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3_600,
        "d" => n * 86_400,
        _ => {
            return Err(SettingsError(format!(
                "{name}=`{text}` is not a duration (3d, 72h, 90m, 30s)"
            )));
        }
    };
    Ok(Duration::from_secs(secs))
}

pub(super) fn read(v: &Vars<'_>) -> Result<MerchantWebhookSettings, SettingsError> {
    let urls: Vec<String> = v
        .var("MERCHANT_WEBHOOK_URL")
        .map(|list| {
            list.split(',')
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let max_age = match v.var("MERCHANT_WEBHOOK_MAX_AGE") {
        Some(text) => parse_duration("MERCHANT_WEBHOOK_MAX_AGE", &text)?,
        None => Duration::from_secs(3 * 86_400),
    };
    let s = MerchantWebhookSettings {
        urls,
        secret: v.var("MERCHANT_WEBHOOK_SECRET").map(Secret::new),
        max_age,
        retry_base: v.millis("MERCHANT_WEBHOOK_RETRY_BASE_MS", 10_000)?,
        retry_max: v.millis("MERCHANT_WEBHOOK_RETRY_MAX_MS", 3_600_000)?,
        timeout: v.millis("MERCHANT_WEBHOOK_TIMEOUT_MS", 10_000)?,
        poll_interval: v.millis("MERCHANT_WEBHOOK_POLL_MS", 500)?,
        concurrency: v.parsed("MERCHANT_WEBHOOK_CONCURRENCY", 4)?,
    };
    validate(&s)?;
    Ok(s)
}

fn validate(s: &MerchantWebhookSettings) -> Result<(), SettingsError> {
    let bad = |m: String| Err(SettingsError(m));
    if let Some(u) = s
        .urls
        .iter()
        .find(|u| !(u.starts_with("https://") || u.starts_with("http://")))
    {
        return bad(format!("MERCHANT_WEBHOOK_URL: `{u}` is not an http(s) URL"));
    }
    if !s.urls.is_empty() && s.secret.as_ref().is_none_or(|k| k.expose().len() < 16) {
        return bad("MERCHANT_WEBHOOK_SECRET (at least 16 characters) is required with MERCHANT_WEBHOOK_URL".into());
    }
    if s.timeout.is_zero() || s.retry_base.is_zero() || s.poll_interval.is_zero() {
        return bad(
            "MERCHANT_WEBHOOK_TIMEOUT_MS, _RETRY_BASE_MS and _POLL_MS must be positive".into(),
        );
    }
    if !(1..=256).contains(&s.concurrency) {
        return bad("MERCHANT_WEBHOOK_CONCURRENCY must be between 1 and 256".into());
    }
    Ok(())
}
