//! Every [`Engine`] is a [`Backend`]: its commands are [`Service`]'s, so neither engine
//! writes them again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use kubeci_build::BuildRequest;
use kubeci_results::BuildOutputs;
use kubeci_spec::{Job, LoadedJob};

use super::{BuildStore, Service};
use crate::api::{
    ApproveError, ArchiveError, Backend, BuildTests, BuildView, BuildsPage, CancelError,
    EngineKind, JobView, LatestStates, LogError, LogOptions, LogStream, PageRequest, TestHistory,
    TriggerError, TriggerRequest, Triggered,
};
use crate::approval::Approval;
use crate::archive::ArchivedFile;
use crate::metrics::Family;

/// What only an engine itself can say, besides its [`BuildStore`].
pub trait Engine: BuildStore {
    /// Whether it has its first complete view (its caches are synced).
    fn ready(&self) -> bool;
    fn kind(&self) -> EngineKind;
    /// Why it cannot build `job`, if it cannot (see [`Backend::cannot_build`]).
    fn cannot_build(&self, _job: &LoadedJob) -> Option<String> {
        None
    }
    /// Called once when kubeci stops (see [`Backend::stop`]).
    fn stop(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}

impl<E: Engine> Backend for E {
    async fn put_output(
        &self,
        token: &str,
        kind: crate::archive::FileKind,
        path: &str,
        bytes: crate::archive::FileChunks,
    ) -> Result<u64, crate::collector::CollectRefusal> {
        Service(self).put_output(token, kind, path, bytes).await
    }

    async fn outputs_done(
        &self,
        token: &str,
        refused: crate::api::RefusedList,
    ) -> Result<BuildOutputs, crate::collector::CollectRefusal> {
        Service(self).outputs_done(token, refused).await
    }

    fn ready(&self) -> bool {
        Engine::ready(self)
    }

    fn kind(&self) -> EngineKind {
        Engine::kind(self)
    }

    fn cannot_build(&self, job: &LoadedJob) -> Option<String> {
        Engine::cannot_build(self, job)
    }

    fn stop(&self) -> impl Future<Output = ()> + Send {
        Engine::stop(self)
    }

    fn jobs(&self) -> Vec<JobView> {
        Service(self).jobs()
    }

    fn namespaces(&self) -> Vec<String> {
        Service(self).namespaces()
    }

    fn builds(&self, namespace: &str, name: &str) -> Option<Vec<BuildView>> {
        Service(self).builds(namespace, name)
    }

    async fn builds_page(
        &self,
        namespace: &str,
        name: &str,
        page: PageRequest,
    ) -> Option<BuildsPage> {
        Service(self).builds_page(namespace, name, page).await
    }

    async fn build(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
    ) -> Result<Option<BuildView>, ArchiveError> {
        Service(self).build(namespace, name, number).await
    }

    fn declared_jobs(&self) -> Vec<Arc<LoadedJob>> {
        Service(self).declared_jobs()
    }

    fn latest_states(&self) -> LatestStates {
        Service(self).latest_states()
    }

    async fn recent_builds(
        &self,
        jobs: &[(String, String)],
        limit: usize,
    ) -> HashMap<(String, String), Vec<BuildView>> {
        Service(self).recent_builds(jobs, limit).await
    }

    async fn trigger(&self, request: TriggerRequest) -> Result<Triggered, TriggerError> {
        Service(self).trigger(request).await
    }

    async fn cancel(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        by: &str,
    ) -> Result<BuildView, CancelError> {
        Service(self).cancel(namespace, name, number, by).await
    }

    async fn approve(
        &self,
        namespace: &str,
        name: &str,
        approval: Approval,
    ) -> Result<(), ApproveError> {
        Service(self).approve(namespace, name, approval).await
    }

    fn approvals(&self, namespace: &str, name: &str) -> Vec<Approval> {
        Service(self).approvals(namespace, name)
    }

    async fn request(&self, namespace: &str, name: &str, number: u64) -> Option<BuildRequest> {
        Service(self).request(namespace, name, number).await
    }

    fn specs(&self, repositories: Option<&[String]>) -> Vec<(String, Arc<Job>)> {
        Service(self).specs(repositories)
    }

    fn declaration(&self, namespace: &str, name: &str) -> Option<Arc<LoadedJob>> {
        Service(self).declaration(namespace, name)
    }

    fn archive_behind(&self) -> Option<String> {
        Service(self).archive_behind()
    }

    fn metrics(&self) -> Vec<Family> {
        Service(self).metrics()
    }

    async fn outputs(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
    ) -> Result<Option<BuildOutputs>, ArchiveError> {
        Service(self).outputs(namespace, name, number).await
    }

    async fn tests(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
    ) -> Result<Option<BuildTests>, ArchiveError> {
        Service(self).tests(namespace, name, number).await
    }

    async fn test_history(
        &self,
        namespace: &str,
        name: &str,
        id: &str,
        before: Option<u64>,
    ) -> Result<TestHistory, ArchiveError> {
        Service(self)
            .test_history(namespace, name, id, before)
            .await
    }

    async fn artifact(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        path: &str,
    ) -> Result<Option<(u64, ArchivedFile)>, ArchiveError> {
        Service(self).artifact(namespace, name, number, path).await
    }

    async fn log(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        options: LogOptions,
    ) -> Result<LogStream, LogError> {
        Service(self).log(namespace, name, number, options).await
    }
}
