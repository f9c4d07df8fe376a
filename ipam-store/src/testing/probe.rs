//! Questions to a plain-http etcd that the store's API does not ask: which member leads, and
//! the current revision (to count the writes a run made).

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, GetOptions};

/// How long one question may take: a member that needs longer counts as not answering.
const ANSWER_WITHIN: Duration = Duration::from_millis(1000);

/// One member's view of the cluster.
pub(crate) struct Status {
    /// The member that answered.
    pub member: u64,
    /// The leader it follows (itself if it leads), 0 when it knows none.
    pub leader: u64,
}

/// The status of the member at `endpoint`; `None` if it does not answer in time.
pub(crate) fn status(endpoint: &str) -> Option<Status> {
    ask(&[endpoint], |mut client| async move {
        let status = client.status().await?;
        Ok(Status {
            member: status.header().map_or(0, |h| h.member_id()),
            leader: status.leader(),
        })
    })
    .ok()
}

/// The store's revision now, from the header of a linearizable read: every write (a put, a
/// delete, a transaction that changed anything) raises it by one, so its difference over a
/// run counts the writes the run made. Panics if etcd does not answer.
pub fn revision(endpoints: &[String]) -> i64 {
    ask(endpoints, |mut client| async move {
        let read = client
            .get("/", Some(GetOptions::new().with_count_only()))
            .await?;
        Ok(read.header().map_or(0, |h| h.revision()))
    })
    .unwrap_or_else(|e| panic!("read the revision of etcd at {endpoints:?}: {e}"))
}

/// Connects to `endpoints` and asks `question`, all within [`ANSWER_WITHIN`], on a runtime of
/// its own (the callers are plain threads).
fn ask<T, F>(endpoints: &[impl AsRef<str>], question: impl FnOnce(Client) -> F) -> Result<T, String>
where
    F: Future<Output = Result<T, etcd_client::Error>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("start a runtime: {e}"))?;
    runtime.block_on(async {
        let asked = async { question(Client::connect(endpoints, None).await?).await };
        match tokio::time::timeout(ANSWER_WITHIN, asked).await {
            Ok(answer) => answer.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {ANSWER_WITHIN:?}")),
        }
    })
}
