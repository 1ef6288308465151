//! Checkout sessions: one purchase a merchant sends a customer to pay for (amount, reference,
//! metadata, where to send them back), opened at its own URL. A session may see several
//! attempts (a decline, then another card) but at most one succeeds: a new attempt starts only
//! while no attempt of the session is live or complete ([`start_attempt`]).
//!
//! The rule is kept by locking the session row, not by a unique index: an attempt recorded
//! `failed` that Stripe in fact charged must still be corrected to `complete` (the correction
//! then shows two charged attempts, which the discrepancy log reports), and an index would
//! refuse that correction.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::db::DbResult;
use crate::merchant_data::Invalid;
use crate::models::{NewTransaction, Transaction};
use crate::schema::checkout_sessions::dsl as s;
use crate::schema::transactions::dsl as t;
use crate::state_machine::TxState;
use crate::transactions::{self as txq, Inserted};

/// How long a session may be open: Stripe's bounds for its Checkout Sessions.
pub const MIN_EXPIRES_IN_SECS: i64 = 30 * 60;
pub const MAX_EXPIRES_IN_SECS: i64 = 24 * 60 * 60;
/// The longest return URL taken.
pub const MAX_URL_LEN: usize = 2048;

#[derive(Clone, Debug, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::schema::checkout_sessions)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct CheckoutSession {
    pub id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub price: Option<String>,
    /// Fixed for the customer when given.
    pub email: Option<String>,
    pub reference: Option<String>,
    pub metadata: serde_json::Value,
    pub success_url: String,
    pub cancel_url: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub request_key: Option<String>,
    pub request_fingerprint: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Where a session stands, for the merchant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Can be paid (or is being paid).
    Open,
    /// One attempt is `complete`.
    Complete,
    /// Past `expires_at` with no attempt live or complete.
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Complete => "complete",
            Status::Expired => "expired",
        }
    }
}

/// A session and what its attempts say about it.
#[derive(Clone, Debug)]
pub struct SessionState {
    pub session: CheckoutSession,
    /// The attempt that is live (not `failed`) or complete, newest first, if any.
    pub live: Option<Transaction>,
    /// `expires_at` has passed, by the database's clock.
    pub expired: bool,
}

impl SessionState {
    pub fn status(&self) -> Status {
        match &self.live {
            Some(t) if t.state == TxState::Complete => Status::Complete,
            Some(_) => Status::Open,
            None if self.expired => Status::Expired,
            None => Status::Open,
        }
    }
}

pub enum Created {
    New(CheckoutSession),
    /// The request's idempotency key made this session before.
    Existing(CheckoutSession),
}

/// Inserts `new`, or returns the session its `request_key` made before (the unique index
/// settles two concurrent requests with one key).
pub async fn create(conn: &mut AsyncPgConnection, new: &CheckoutSession) -> DbResult<Created> {
    let inserted = diesel::insert_into(s::checkout_sessions)
        .values(new)
        .on_conflict(s::request_key)
        .do_nothing()
        .returning(CheckoutSession::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    if let Some(row) = inserted {
        return Ok(Created::New(row));
    }
    let existing = s::checkout_sessions
        .filter(s::request_key.eq(&new.request_key))
        .select(CheckoutSession::as_select())
        .first(conn)
        .await?;
    Ok(Created::Existing(existing))
}

/// The session row alone (what an attempt is made from; `start_attempt` checks the rest).
pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> DbResult<Option<CheckoutSession>> {
    s::checkout_sessions
        .find(id)
        .select(CheckoutSession::as_select())
        .first(conn)
        .await
        .optional()
}

/// The session, its live or complete attempt, and whether it has expired.
pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> DbResult<Option<SessionState>> {
    let Some((session, expired)) = s::checkout_sessions
        .find(id)
        .select((
            CheckoutSession::as_select(),
            s::expires_at.le(diesel::dsl::now),
        ))
        .first(conn)
        .await
        .optional()?
    else {
        return Ok(None);
    };
    let live = live_attempt(conn, id).await?;
    Ok(Some(SessionState {
        session,
        live,
        expired,
    }))
}

/// The session's attempt that is not `failed`: in flight or complete. Should Stripe have
/// charged two (a failed attempt corrected), the complete one, then the newest.
async fn live_attempt(conn: &mut AsyncPgConnection, id: Uuid) -> DbResult<Option<Transaction>> {
    let mut live: Vec<Transaction> = t::transactions
        .filter(t::session_id.eq(id))
        .filter(t::state.ne(TxState::Failed))
        .order((t::created_at.desc(), t::id.desc()))
        .select(Transaction::as_select())
        .load(conn)
        .await?;
    let complete = live.iter().position(|t| t.state == TxState::Complete);
    Ok(match complete {
        Some(i) => Some(live.swap_remove(i)),
        None => live.into_iter().next(),
    })
}

/// What asking to pay in a session came to.
pub enum Attempt {
    /// A new attempt; its charge still has to be queued.
    Started(Transaction),
    /// The request's idempotency key started this attempt before.
    Replayed(Transaction),
    /// Another attempt is live or complete: no new one may start.
    Taken(Transaction),
    Expired,
    UnknownSession,
}

/// Starts `new` as an attempt of session `id`, unless one is live or complete, or the session
/// has expired. The session row is locked for the check and the insert, so of two tabs paying
/// at once exactly one starts an attempt; the other is told which.
pub async fn start_attempt(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    new: &NewTransaction,
) -> DbResult<Attempt> {
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        if let Some(key) = &new.request_key {
            let seen = t::transactions
                .filter(t::request_key.eq(key))
                .select(Transaction::as_select())
                .first(conn)
                .await
                .optional()?;
            if let Some(row) = seen {
                return Ok(Attempt::Replayed(row));
            }
        }
        let locked = s::checkout_sessions
            .find(id)
            .select(s::expires_at.le(diesel::dsl::now))
            .for_update()
            .first::<bool>(conn)
            .await
            .optional()?;
        let Some(expired) = locked else {
            return Ok(Attempt::UnknownSession);
        };
        // A new statement under the lock: it sees every attempt committed before we got it.
        if let Some(live) = live_attempt(conn, id).await? {
            return Ok(Attempt::Taken(live));
        }
        if expired {
            return Ok(Attempt::Expired);
        }
        Ok(match txq::insert(conn, new).await? {
            Inserted::Created(row) => Attempt::Started(row),
            Inserted::Existing(row) => Attempt::Replayed(row),
        })
    })
    .await
}

/// A `success_url` or `cancel_url`: `https`, or plain `http` to `localhost` or `127.0.0.1`
/// only (development); no credentials, spaces or control characters; at most
/// [`MAX_URL_LEN`] bytes.
pub fn validate_return_url(field: &'static str, url: &str) -> Result<String, Invalid> {
    let invalid = |message: &str| Invalid {
        field,
        message: message.to_owned(),
    };
    if url.len() > MAX_URL_LEN {
        return Err(invalid("must be at most 2048 characters"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("must not contain spaces or control characters"));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("must be an absolute https URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(invalid("must not contain credentials"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h, Some(p)),
        _ => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    if !host_ok || !port_ok {
        return Err(invalid("must name a valid host"));
    }
    match scheme {
        "https" => Ok(url.to_owned()),
        "http" if host == "localhost" || host == "127.0.0.1" => Ok(url.to_owned()),
        "http" => Err(invalid(
            "must be https (plain http only to localhost or 127.0.0.1)",
        )),
        _ => Err(invalid("must be an absolute https URL")),
    }
}

/// `url` with `params` appended to its query string, before any fragment; the rest of the URL
/// is kept exactly as the merchant wrote it.
pub fn with_query(url: &str, params: &[(&str, &str)]) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let extra = serde_urlencoded::to_string(params).unwrap_or_default();
    let sep = match base.find('?') {
        None => "?",
        Some(i) if i + 1 == base.len() || base.ends_with('&') => "",
        Some(_) => "&",
    };
    let mut out = format!("{base}{sep}{extra}");
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_urls_are_https_or_local_http() {
        for ok in [
            "https://shop.example.com/thanks",
            "https://shop.example.com:8443/t?order=1#top",
            "http://localhost:3000/done",
            "http://127.0.0.1/done",
            "https://[::1]:8443/x",
        ] {
            assert_eq!(validate_return_url("success_url", ok).as_deref(), Ok(ok));
        }
        for bad in [
            "",
            "shop.example.com/thanks",
            "/thanks",
            "http://shop.example.com/thanks",
            "http://localhost.evil.com/x",
            "javascript://alert(1)",
            "ftp://shop.example.com",
            "https://user:pw@shop.example.com/",
            "https://shop.example.com/a b",
            "https://shop.example.com/\n",
            "https:///path",
            "https://shop.example.com:99999/",
            "https://sh<op>.com/",
        ] {
            let e = validate_return_url("success_url", bad).unwrap_err();
            assert_eq!(e.field, "success_url", "{bad}");
        }
        let long = format!("https://a.com/{}", "x".repeat(MAX_URL_LEN));
        assert!(validate_return_url("cancel_url", &long).is_err());
    }

    #[test]
    fn ids_are_appended_to_the_query_before_the_fragment() {
        let ids = [("session_id", "s1"), ("transaction_id", "t 1")];
        assert_eq!(
            with_query("https://a.com/t", &ids),
            "https://a.com/t?session_id=s1&transaction_id=t+1"
        );
        assert_eq!(
            with_query("https://a.com/t?order=%2F1#done", &ids),
            "https://a.com/t?order=%2F1&session_id=s1&transaction_id=t+1#done"
        );
        assert_eq!(
            with_query("https://a.com/t?", &ids[..1]),
            "https://a.com/t?session_id=s1"
        );
    }
}
