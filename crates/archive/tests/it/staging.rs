//! A build pod's uploads on their way in: staged under their own names, none of the
//! build's files until its `done` takes them, the newest of several uploads of one file
//! taken; a build's files committed by one `done` at a time, and once.

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use kubeci_archive::Archive;
use kubeci_engine::archive::FileKind;
use kubeci_results::BuildOutputs;

use crate::common::{archive_over, build, stores};

async fn stage(archive: &Archive, kind: FileKind, path: &str, bytes: &'static [u8]) {
    let given = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(bytes))]);
    let written = archive.put_staged(build(7), kind, path, given, 1024).await;
    assert_eq!(written.unwrap(), bytes.len() as u64);
}

async fn artifact(archive: &Archive, path: &str) -> Option<Vec<u8>> {
    let (_, mut bytes) = archive.file(build(7), path).await.unwrap()?;
    let mut whole = Vec::new();
    while let Some(piece) = bytes.next().await {
        whole.extend_from_slice(&piece.unwrap());
    }
    Some(whole)
}

#[tokio::test]
async fn an_upload_is_none_of_its_build_s_files_until_its_done_takes_it() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        stage(
            &archive,
            FileKind::Artifact,
            "dist/app #1 100%.txt",
            b"first",
        )
        .await;
        stage(
            &archive,
            FileKind::Artifact,
            "dist/app #1 100%.txt",
            b"second",
        )
        .await;
        stage(&archive, FileKind::Report, "out/junit.xml", b"<testsuite/>").await;
        assert_eq!(
            artifact(&archive, "dist/app #1 100%.txt").await,
            None,
            "{name}"
        );
        let listed = archive.list_files(build(7), "artifacts", 10).await.unwrap();
        assert!(listed.is_empty(), "{name}: {listed:?}");

        let staged = archive.list_staged(build(7), 10).await.unwrap();
        let seen: Vec<_> = (staged.iter())
            .map(|s| (s.kind, s.path.as_str(), s.size))
            .collect();
        assert_eq!(
            seen,
            [
                (FileKind::Artifact, "dist/app #1 100%.txt", 6),
                (FileKind::Report, "out/junit.xml", 12)
            ],
            "{name}: the newest upload of each file"
        );
        for file in &staged {
            archive.take_staged(build(7), file).await.unwrap();
        }
        let taken = artifact(&archive, "dist/app #1 100%.txt").await;
        assert_eq!(taken.as_deref(), Some(&b"second"[..]), "{name}");
        let reports = archive.list_files(build(7), "reports", 10).await.unwrap();
        assert_eq!(reports, [("out/junit.xml".to_owned(), 12)], "{name}");

        archive.clear_staged(build(7)).await.unwrap();
        assert!(archive.list_staged(build(7), 10).await.unwrap().is_empty());
        let left = store.keys("kubeci/v1/jobs/ci/web/builds/7/staging/").await;
        assert!(left.is_empty(), "{name}: {left:?}");
        // Deleting the build deletes what a late upload left staged (by the names stored).
        stage(&archive, FileKind::Artifact, "dist/late 100%.txt", b"late").await;
        archive.delete_build(build(7)).await.unwrap();
        let left = store.keys("kubeci/v1/jobs/ci/web/builds/7/").await;
        assert!(left.is_empty(), "{name}: {left:?}");
    }
}

// Long on purpose: one claim's life in order — taken, refused to others, renewed, given
// up, taken over — then the commit point written once, on each store.
#[tokio::test]
async fn a_build_s_files_are_committed_by_one_done_at_a_time_and_once() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        let now = 1_800_000_000;
        let claim = archive.claim_commit(build(7), 120, now).await.unwrap();
        let claim = claim.expect("the first claim");
        assert!(
            (archive
                .claim_commit(build(7), 120, now + 119)
                .await
                .unwrap())
            .is_none(),
            "{name}: another done while the first holds it"
        );
        let renewed = archive
            .renew_commit(build(7), &claim, now + 100)
            .await
            .unwrap();
        let renewed = renewed.expect("its holder renews it");
        assert!(
            (archive
                .claim_commit(build(7), 120, now + 200)
                .await
                .unwrap())
            .is_none(),
            "{name}: renewed, it holds past its first lease"
        );
        // A failed done gives its claim up: the next one goes ahead at once.
        archive.release_commit(build(7), &renewed).await.unwrap();
        let next = archive
            .claim_commit(build(7), 120, now + 201)
            .await
            .unwrap();
        let next = next.expect("claimed at once once given up");
        assert!(
            (archive
                .renew_commit(build(7), &renewed, now + 202)
                .await
                .unwrap())
            .is_none(),
            "{name}: a claim taken over is no longer its old holder's to renew"
        );
        // Its old holder cannot give up the claim another holds now.
        archive.release_commit(build(7), &renewed).await.unwrap();
        assert!(
            (archive
                .claim_commit(build(7), 120, now + 203)
                .await
                .unwrap())
            .is_none(),
            "{name}: still held by the next"
        );
        // Taken over once its lease ran out: its old holder has lost it.
        let later = archive
            .claim_commit(build(7), 120, now + 400)
            .await
            .unwrap();
        assert!(later.is_some(), "{name}: taken over after its lease");
        let lost = archive
            .renew_commit(build(7), &next, now + 401)
            .await
            .unwrap();
        assert!(
            lost.is_none(),
            "{name}: a claim taken over stops its old holder"
        );

        let mut first = BuildOutputs::new();
        first.refused.push(kubeci_results::RefusedFile {
            path: "first".into(),
            why: "first".into(),
        });
        let second = BuildOutputs::new();
        assert!(archive.put_outputs(build(7), None, &first).await.unwrap());
        assert!(
            !archive.put_outputs(build(7), None, &second).await.unwrap(),
            "{name}: the commit point is written once"
        );
        assert_eq!(archive.outputs(build(7)).await.unwrap(), Some(first));
    }
}
