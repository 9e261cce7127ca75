//! The archive over real stores: a directory, memory, and an S3 endpoint on loopback.

mod common;
mod engine;
mod fake_s3;
mod files;
mod index;
mod logs;
mod records;
mod s3;
mod staging;
