//go:build tools

// Package gotools pins the Go test tools whose JUnit reports kubeci-results' tests read:
// go-junit-report v2 and gotestsum. `scripts/go-tools build` compiles them from this
// module; nothing here is kubeci's code.
package gotools

import (
	_ "github.com/jstemmer/go-junit-report/v2"
	_ "gotest.tools/gotestsum"
)
