//go:build tools

// Package controlplane pins the Kubernetes components kubeci's tests run against.
// `scripts/cluster build` compiles them from this module; nothing here is kubeci's code.
package controlplane

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
