// Command control-plane starts a real Kubernetes control plane on loopback for the test suite:
// embedded etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes),
// each one a child process of this program (they cannot share one process), plus a small
// PersistentVolume provisioner. It is a multi-call binary: the first argument names what to run.
//
//	control-plane up [flags]               the whole control plane (see up.go)
//	control-plane etcd --dir D --client-port P --peer-port Q
//	control-plane kube-apiserver ARGS...   k8s.io/kubernetes/cmd/kube-apiserver
//	control-plane kube-controller-manager ARGS...
//	control-plane kube-scheduler ARGS...
//	control-plane kubectl ARGS...          k8s.io/kubernetes/cmd/kubectl
//	control-plane proxy --upstream URL --ca FILE   fault-injecting proxy (see proxy.go)
package main

import (
	"fmt"
	"os"
	_ "time/tzdata" // CronJob time zones, as in the kube-apiserver and kcm mains

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: control-plane up|etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|proxy [args]")
		os.Exit(2)
	}
	name := os.Args[1]
	// Each entry sees itself as the program: os.Args[0] is its name, its own flags follow.
	os.Args = os.Args[1:]
	switch name {
	case "up":
		os.Exit(up(os.Args[1:]))
	case "etcd":
		os.Exit(runEtcd(os.Args[1:]))
	case "kube-apiserver":
		os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
	case "kube-controller-manager":
		os.Exit(cli.Run(kcm.NewControllerManagerCommand()))
	case "kube-scheduler":
		os.Exit(cli.Run(scheduler.NewSchedulerCommand()))
	case "proxy":
		os.Exit(runProxy(os.Args[1:]))
	case "kubectl":
		if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
	default:
		fmt.Fprintf(os.Stderr, "control-plane: unknown command %q\n", name)
		os.Exit(2)
	}
}
