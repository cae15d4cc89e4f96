//go:build tools

// Package kube pins the Kubernetes commands Skiff's tests build, so that
// `go build k8s.io/kubernetes/cmd/kube-apiserver` (and kube-controller-manager)
// resolves inside this module.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
