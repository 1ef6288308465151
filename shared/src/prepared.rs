//! Statements with a fixed SQL text, which each connection prepares once and then reuses.
//!
//! diesel caches a prepared statement only for queries whose text can never vary: it never
//! caches `sql_query`, nor any UPDATE or INSERT built with its DSL (a changeset's text depends on
//! its values). So every write a payment makes was parsed and planned by Postgres again on every
//! call, about a quarter of Postgres' CPU in the benchmark (bench/results.md). A [`Prepared`]
//! statement tells diesel its text is fixed, through a type of its own, and diesel then keys its
//! per-connection statement cache by that type.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::{Error, QueryResult};
use diesel::sql_types::Untyped;

/// One statement: its text, with `$1`, `$2`… placeholders as Postgres writes them, and its
/// parameters. A placeholder may appear several times; each appearance binds the value again.
pub(crate) trait FixedSql {
    /// A type that belongs to this statement alone: diesel's statement cache is keyed by it, so
    /// two statements sharing one would run each other's text.
    type Id: 'static;
    const SQL: &'static str;
    /// Binds parameter `n` (1-based) of [`Self::SQL`] with its SQL type.
    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

/// Runs a [`FixedSql`] through diesel-async's `RunQueryDsl` (implemented for every type);
/// rows load by column name (`QueryableByName`).
pub(crate) struct Prepared<S>(pub S);

impl<S: FixedSql> QueryId for Prepared<S> {
    type QueryId = S::Id;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<S: FixedSql> Query for Prepared<S> {
    type SqlType = Untyped;
}

impl<S: FixedSql> QueryFragment<Pg> for Prepared<S> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let mut rest = S::SQL;
        while let Some(at) = rest.find('$') {
            out.push_sql(&rest[..at]);
            let after = &rest[at + 1..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let n = after[..digits].parse().map_err(|_| {
                Error::QueryBuilderError(format!("bad placeholder in {rest}").into())
            })?;
            // diesel writes the placeholder itself, numbered in order of appearance.
            self.0.bind(n, &mut out)?;
            rest = &after[digits..];
        }
        out.push_sql(rest);
        Ok(())
    }
}

/// The error for a placeholder a statement has no parameter for: a bug in its `bind`.
pub(crate) fn no_parameter(n: usize) -> Error {
    Error::QueryBuilderError(format!("statement has no parameter ${n}").into())
}
