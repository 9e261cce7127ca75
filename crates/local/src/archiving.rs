//! What the local engine gives the archive and does once a build is archived: each step of
//! a build's stored log, read from the store in batches as the archive takes it; and, once
//! a build is archived whole, its rows and log lines dropped (the store keeps only what is
//! live: the pages, the API and the CLI read the build from the archive from then on).

use kubeci_build::BuildRef;
use kubeci_engine::api::BackendError;
use kubeci_engine::archive::{Archived, StepLines, StepLog, StepReadError, TimedLine};
use kubeci_engine::scheduler::WorkloadError;
use kubeci_engine::service::Service;

use crate::running::LOG_BATCH_BYTES;
use crate::store::{BuildRow, Reads};
use crate::LocalBackend;

/// The step of lines kubeci wrote before any container started (a pod that could not
/// start says why there).
const BEFORE_ANY_STEP: &str = "kubeci";

impl LocalBackend {
    /// Each step of `row`'s log: its lines from where it begins to where the next one does.
    pub(crate) fn step_logs_of(&self, row: &BuildRow) -> Result<Vec<StepLog>, BackendError> {
        let (namespace, job, number) = (&row.namespace, &row.job, row.number);
        let (starts, lines) = self.read(|r| r.steps(namespace, job, number))?;
        let mut bounds: Vec<(String, u64, u64)> = Vec::new();
        let first = starts.first().map_or(lines, |(seq, _)| *seq);
        if first > 0 {
            bounds.push((BEFORE_ANY_STEP.to_owned(), 0, first));
        }
        for (i, (seq, name)) in starts.iter().enumerate() {
            let end = starts.get(i + 1).map_or(lines, |(next, _)| *next);
            bounds.push((name.clone(), *seq, end));
        }
        let build = BuildRef {
            namespace,
            job,
            number,
        };
        Ok(bounds
            .into_iter()
            .map(|(name, from, to)| StepLog {
                name,
                lines: self.stored_lines(build, from, to),
                incomplete: None,
            })
            .collect())
    }

    /// Lines `from..to` of a build's stored log, read in batches as they are taken.
    fn stored_lines(&self, build: BuildRef<'_>, from: u64, to: u64) -> StepLines {
        let me = self.me.clone();
        let (namespace, job, number) = (
            build.namespace.to_owned(),
            build.job.to_owned(),
            build.number,
        );
        let batches = futures_util::stream::unfold(Some(from), move |next| {
            let (me, namespace, job) = (me.clone(), namespace.clone(), job.clone());
            async move {
                let from = next.filter(|from| *from < to)?;
                let Some(engine) = me.upgrade() else {
                    let gone = StepReadError::Retry("kubeci is stopping".into());
                    return Some((Err(gone), None));
                };
                let batch = engine.read(|r| r.log(&namespace, &job, number, from, LOG_BATCH_BYTES));
                match batch {
                    Ok(batch) => {
                        let batch: Vec<_> = batch.into_iter().filter(|l| l.seq < to).collect();
                        let next = batch.last().map(|line| line.seq + 1);
                        let lines = batch.into_iter().map(|line| TimedLine {
                            time: line.written_at.and_then(|at| {
                                jiff::Timestamp::from_nanosecond(i128::from(at)).ok()
                            }),
                            text: line.text,
                        });
                        Some((Ok(lines.collect::<Vec<_>>()), next))
                    }
                    Err(e) => Some((Err(StepReadError::Retry(e.to_string())), None)),
                }
            }
        });
        Box::pin(futures_util::StreamExt::flat_map(batches, |batch| {
            let lines: Vec<Result<TimedLine, StepReadError>> = match batch {
                Ok(lines) => lines.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures_util::stream::iter(lines)
        }))
    }

    /// Archives `build` as far as `stage` (the engine's [`Service::archive`]), then records
    /// it: its first record in its row; archived whole, its rows and log lines dropped.
    pub(crate) async fn archive_build_now(
        &self,
        build: BuildRef<'_>,
        stage: Archived,
    ) -> Result<(), WorkloadError> {
        Service(self).archive(build, stage).await?;
        let (namespace, job, number) = (
            build.namespace.to_owned(),
            build.job.to_owned(),
            build.number,
        );
        let dropped = self
            .with_store(move |store| match stage {
                Archived::Complete => store.delete_build(&namespace, &job, number),
                _ => store.set_archived(&namespace, &job, number, stage),
            })
            .await;
        dropped?;
        Ok(())
    }
}
