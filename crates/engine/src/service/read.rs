//! Reading builds back, written once for both engines: a job's builds are the engine's
//! live ones and the archive's, merged newest first and paged; a build, its request and
//! its log are the live one's, else the archive's — shown exactly as they were live.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures_util::StreamExt;
use kubeci_build::{BuildRef, BuildRequest, JobRef};
use kubeci_spec::Catalogue;

use super::{BuildStore, Service};
use crate::api::{
    ArchiveError, BuildView, BuildsPage, LogError, LogOptions, LogStream, PageRequest,
};
use crate::archive::{self, ArchivedBuild, ArchivedSummary, BuildArchive};

/// How many of a job's archived builds one read of its index asks for at least.
const ARCHIVE_READ: usize = 20;

/// How many jobs' archived builds a page reads at once (each a read or two of the store:
/// a hundred jobs one after another would wait a hundred round trips).
const ARCHIVE_READS_AT_ONCE: usize = 16;

impl<S: BuildStore> Service<'_, S> {
    pub(super) fn the_archive(&self) -> Option<Arc<dyn BuildArchive>> {
        self.0.common().archiving.archive.clone()
    }

    /// A page of a job's builds, live and archived, newest first; `None` for a job
    /// neither declared nor built. When the archive cannot be read, the page holds the
    /// live builds and says why archived ones may be missing.
    pub async fn builds_page(
        &self,
        namespace: &str,
        name: &str,
        page: PageRequest,
    ) -> Option<BuildsPage> {
        let live = self.0.builds_of(namespace, name).ok()?;
        let below = |number: u64| page.before.is_none_or(|before| number < before);
        let live: Vec<S::Build> = (live.into_iter())
            .filter(|b| below(self.0.summary(b).number))
            .collect();
        let numbers: BTreeSet<u64> = live.iter().map(|b| self.0.summary(b).number).collect();
        let job = JobRef {
            namespace,
            job: name,
        };
        // One more than the page: whether there is a next one.
        let wanted = page.limit.saturating_add(1);
        let (archived, error) = self.archived(job, page.before, wanted, &numbers).await;
        if let (None, Some(newest)) = (page.before, archived.first()) {
            let newest_archived = &self.0.common().archiving.newest;
            newest_archived.note(namespace, name, newest.number, newest.state.phase);
        }
        if live.is_empty() && archived.is_empty() && error.is_none() {
            self.shown(namespace, name, &live)?;
        }
        let template = self.log_template(namespace, name);
        let mut views = self.views_with(template.as_deref(), &live);
        views.extend(
            (archived.iter()).map(|summary| summary.view(namespace, name, template.as_deref())),
        );
        views.sort_by_key(|b| std::cmp::Reverse(b.number));
        views.truncate(wanted);
        Some(BuildsPage::of(views, page.limit, error))
    }

    /// Up to `wanted` of a job's archived builds below `before` that are not among the
    /// live ones (`live`), newest first, and why the archive could not be read, if not.
    async fn archived(
        &self,
        job: JobRef<'_>,
        mut before: Option<u64>,
        wanted: usize,
        live: &BTreeSet<u64>,
    ) -> (Vec<ArchivedSummary>, Option<String>) {
        let Some(archive) = self.the_archive() else {
            return (Vec::new(), None);
        };
        let mut found = Vec::new();
        let read = wanted.max(ARCHIVE_READ);
        let newest_pages = &self.0.common().archiving.pages;
        while found.len() < wanted {
            let (now, ticket) = (std::time::Instant::now(), newest_pages.before_reading());
            let kept = match before {
                None => newest_pages.newest(job, read, now),
                Some(_) => None,
            };
            let page = match kept {
                Some(page) => page,
                None => match archive.page(job, before, read).await {
                    Ok(page) => {
                        if before.is_none() {
                            newest_pages.keep(job, read, &page, now, ticket);
                        }
                        page
                    }
                    Err(e) => return (found, Some(e.to_string())),
                },
            };
            let last = page.last().map(|b| b.number);
            let full = page.len() == read;
            found.extend(page.into_iter().filter(|b| !live.contains(&b.number)));
            match (full, last) {
                (true, Some(last)) => before = Some(last),
                _ => break,
            }
        }
        found.truncate(wanted);
        (found, None)
    }

    /// The newest `limit` builds (live and archived) of each of `jobs` that is shown. The
    /// live ones are read at one take; the archive is asked only for a job with fewer
    /// than `limit` live builds.
    pub async fn recent_builds(
        &self,
        jobs: &[(String, String)],
        limit: usize,
    ) -> HashMap<(String, String), Vec<BuildView>> {
        let found = self.0.recent_builds_of(jobs, limit);
        let mut recent = HashMap::new();
        let mut from_the_archive = Vec::new();
        {
            let catalogue = self.0.catalogue();
            for ((namespace, name), builds) in jobs.iter().zip(found) {
                let Ok(builds) = builds else { continue };
                if builds.len() < limit && self.the_archive().is_some() {
                    from_the_archive.push((namespace.clone(), name.clone()));
                    continue;
                }
                let declared = catalogue.is_declared(namespace, name);
                if !declared && builds.is_empty() {
                    continue;
                }
                let template = self.log_template_in(&catalogue, namespace, name);
                let views = self.views_with(template.as_deref(), &builds);
                recent.insert((namespace.clone(), name.clone()), views);
            }
        }
        let page = PageRequest {
            before: None,
            limit,
        };
        let archived = futures_util::stream::iter(from_the_archive)
            .map(|job: (String, String)| async move {
                let page = self.builds_page(&job.0, &job.1, page).await;
                (job, page)
            })
            .buffer_unordered(ARCHIVE_READS_AT_ONCE);
        let archived: Vec<_> = archived.collect().await;
        for (job, page) in archived {
            if let Some(page) = page {
                recent.insert(job, page.builds);
            }
        }
        recent
    }

    /// Build `number` of a job: the live one, else the archived one.
    pub async fn build(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
    ) -> Result<Option<BuildView>, ArchiveError> {
        if let Ok(Some(build)) = self.0.find_build(namespace, name, number).await {
            return Ok(Some(self.view(&build)));
        }
        let Some(record) = self.archived_record(namespace, name, number).await? else {
            return Ok(None);
        };
        let template = self.log_template(namespace, name);
        Ok(Some(record.view(template.as_deref())))
    }

    /// Build `number`'s record in the archive, if there is an archive and it holds one.
    async fn archived_record(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> Result<Option<ArchivedBuild>, ArchiveError> {
        let Some(archive) = self.the_archive() else {
            return Ok(None);
        };
        let build = BuildRef {
            namespace,
            job,
            number,
        };
        archive.record(build).await
    }

    /// The request build `number` was started with (what a rebuild repeats): the live
    /// build's, else the archived one's.
    pub async fn request(&self, namespace: &str, name: &str, number: u64) -> Option<BuildRequest> {
        if let Ok(Some(build)) = self.0.build_now(namespace, name, number) {
            return Some(self.0.request_of(&build));
        }
        let record = self.archived_record(namespace, name, number).await;
        record.ok().flatten().map(|record| record.request)
    }

    /// A build's log: the live one, else the archived one (the same bytes). An archived
    /// record that cannot be read is said so.
    pub async fn log(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        options: LogOptions,
    ) -> Result<LogStream, LogError> {
        let build = BuildRef {
            namespace,
            job: name,
            number,
        };
        let live = self.0.log_of(build, options).await;
        let (Err(LogError::NotFound(not_found)), Some(archive)) = (&live, self.the_archive())
        else {
            return live;
        };
        match archive.record(build).await {
            Ok(Some(record)) if record.complete => {
                Ok(archive::build_log(archive, record, options.timestamps))
            }
            Ok(_) => Err(LogError::NotFound(not_found.clone())),
            Err(e) => Err(LogError::Archive(e)),
        }
    }
}
