//go:build tools

// Package versitygw pins versitygw, the S3 server kubeci's archive tests run against.
// `scripts/s3 build` compiles it from this module; nothing here is kubeci's code.
package versitygw

import (
	_ "github.com/versity/versitygw/cmd/versitygw"
)
