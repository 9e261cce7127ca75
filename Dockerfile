# kubeci's image: the server, and the clone step of every build (`kubeci clone` needs git
# and ssh). Base images are pinned by digest — the tag is for readers; to move to a newer
# one: `docker buildx imagetools inspect rust:1.91-bookworm` (and debian:bookworm-slim),
# then change the digest here.

FROM rust:1.91-bookworm@sha256:c1e5f19e773b7878c3f7a805dd00a495e747acbdc76fb2337a4ebf0418896b33 AS build
WORKDIR /src
COPY . .
# The lockfile is the one the tests ran with; SQLite is compiled in (rusqlite, bundled).
RUN cargo build --release --locked -p kubeci \
    && strip target/release/kubeci

FROM debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251
# git and ssh for the clone step; CA certificates for GitHub's API and https remotes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/kubeci /usr/local/bin/kubeci
# Not root: the uid the Helm chart runs it as (runAsUser) and the clone step's fsGroup.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kubeci"]
CMD ["serve", "--kubernetes"]
