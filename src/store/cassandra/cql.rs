//! The CQL round trips every read goes through: prepared statements (cached, paged, at
//! the configured consistency, with a timeout), one page, or every page streamed; and
//! which driver errors are transient. Cassandra's counterpart of Elasticsearch's `client.rs`.

use std::time::Duration;

use futures::TryStreamExt;
use scylla::errors::{DbError, ExecutionError, PrepareError, RequestAttemptError};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;

use super::CassandraStore;
use crate::store::{StoreError, StoreResult};

/// Page size of the streamed reads (counts, estimates, shard planning).
const STREAM_PAGE: i32 = 5_000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl CassandraStore {
    /// The prepared statement for `cql`, prepared once per page size and kept.
    async fn statement(&self, cql: &str, page_size: i32) -> StoreResult<PreparedStatement> {
        let key = format!("{page_size}|{cql}");
        if let Some(p) = self.prepared.lock().await.get(&key) {
            return Ok(p.clone());
        }
        let mut p = self
            .session
            .prepare(cql)
            .await
            .map_err(|e| classified(prepare_transient(&e), self.context(&format!("preparing `{cql}`: {e}"))))?;
        p.set_consistency(self.consistency);
        p.set_page_size(page_size);
        p.set_request_timeout(Some(REQUEST_TIMEOUT));
        self.prepared.lock().await.insert(key, p.clone());
        Ok(p)
    }

    /// One page (the statement carries its own LIMIT), deserialized as `R`.
    pub(super) async fn fetch<R>(&self, cql: &str, values: Vec<CqlValue>, what: &str) -> StoreResult<Vec<R>>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let statement = self.statement(cql, STREAM_PAGE).await?;
        let result =
            self.session.execute_unpaged(&statement, values).await.map_err(|e| classify(&self.context(what), e))?;
        let rows = result.into_rows_result().map_err(|e| self.undecodable(what, e))?;
        rows.rows::<R>()
            .map_err(|e| self.undecodable(what, e))?
            .collect::<Result<Vec<R>, _>>()
            .map_err(|e| self.undecodable(what, e))
    }

    /// Every row of a statement, fetched page by page by the driver, folded by `f`.
    pub(super) async fn stream<R, F>(&self, cql: &str, values: Vec<CqlValue>, what: &str, mut f: F) -> StoreResult<()>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm> + Send + 'static,
        F: FnMut(R),
    {
        let statement = self.statement(cql, STREAM_PAGE).await?;
        let pager = self
            .session
            .execute_iter(statement, values)
            .await
            .map_err(|e| loose(&self.context(what), &e.to_string()))?;
        let mut rows = pager.rows_stream::<R>().map_err(|e| self.undecodable(what, e))?;
        while let Some(row) = rows.try_next().await.map_err(|e| loose(&self.context(what), &e.to_string()))? {
            f(row);
        }
        Ok(())
    }

    /// Rows the driver got but could not turn into `R`: a schema the statement does not fit.
    fn undecodable(&self, what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Permanent(self.context(&format!("{what}: {e}")))
    }
}

fn classified(transient: bool, message: String) -> StoreError {
    if transient { StoreError::Transient(message) } else { StoreError::Permanent(message) }
}

fn transient_db(db: &DbError) -> bool {
    matches!(
        db,
        DbError::Unavailable { .. }
            | DbError::Overloaded
            | DbError::IsBootstrapping
            | DbError::ReadTimeout { .. }
            | DbError::WriteTimeout { .. }
            | DbError::ReadFailure { .. }
            | DbError::RateLimitReached { .. }
            | DbError::ServerError
    )
}

fn prepare_transient(e: &PrepareError) -> bool {
    !matches!(
        e,
        PrepareError::AllAttemptsFailed {
            first_attempt: RequestAttemptError::DbError(
                DbError::SyntaxError | DbError::Invalid | DbError::Unauthorized | DbError::ConfigError,
                _
            )
        }
    )
}

/// Timeouts, overload, unavailable replicas and lost connections are worth a retry;
/// a bad statement, a schema mismatch or a permission error is not.
fn classify(context: &str, e: ExecutionError) -> StoreError {
    let transient = match &e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => transient_db(db),
        ExecutionError::LastAttemptError(
            RequestAttemptError::BrokenConnectionError(_) | RequestAttemptError::UnableToAllocStreamId,
        ) => true,
        ExecutionError::EmptyPlan | ExecutionError::ConnectionPoolError(_) | ExecutionError::RequestTimeout(_) => true,
        ExecutionError::PrepareError(p) => prepare_transient(p),
        _ => false,
    };
    classified(transient, format!("{context}: {e}"))
}

/// Pager errors wrap the same causes in several layers: classified by their text.
fn loose(context: &str, text: &str) -> StoreError {
    let lower = text.to_lowercase();
    let transient = [
        "timeout",
        "timed out",
        "overloaded",
        "unavailable",
        "bootstrapping",
        "broken connection",
        "connection pool",
        "read failure",
        "rate limit",
    ]
    .iter()
    .any(|w| lower.contains(w));
    classified(transient, format!("{context}: {text}"))
}
