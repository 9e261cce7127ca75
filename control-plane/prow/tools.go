//go:build tools

// Package prow pins Prow (sigs.k8s.io/prow), the CI system kubeci is measured beside
// (issue 31, crates/cli/benches/versus_prow.rs). `scripts/prow build` compiles its commands
// from this module, unmodified; nothing here is kubeci's code.
package prow

import (
	_ "sigs.k8s.io/prow/cmd/crier"
	_ "sigs.k8s.io/prow/cmd/hook"
	_ "sigs.k8s.io/prow/cmd/prow-controller-manager"
	_ "sigs.k8s.io/prow/cmd/sinker"
)
