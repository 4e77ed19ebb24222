//go:build tools

// Package tools pins kwok (fake nodes and pods for the test control plane) in its own module:
// its k8s.io dependencies differ from the control plane's and must not be linked with them.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
