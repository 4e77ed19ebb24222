package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// The controllers kube-controller-manager runs: what StatefulSets, Deployments, garbage
// collection, namespaces, service accounts and volumes need. No node lifecycle controller: kwok
// nodes send no heartbeats, and it would evict every pod.
var controllers = []string{
	"statefulset-controller",
	"deployment-controller",
	"replicaset-controller",
	"garbage-collector-controller",
	"namespace-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
	"persistentvolume-binder-controller",
	"persistentvolume-protection-controller",
	"persistentvolumeclaim-protection-controller",
	"disruption-controller",
	"endpointslice-controller",
	"pod-garbage-collector-controller",
	"clusterrole-aggregation-controller",
}

// The audit policy: every request at Metadata level (user, verb, resource, namespace, name and
// response code; no bodies).
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
`

// StorageClassName is the default StorageClass; the provisioner gives every pending claim a
// PersistentVolume.
const storageClassName = "standard"

// State is written to <dir>/control-plane.json once everything is ready.
type State struct {
	Dir          string         `json:"dir"`
	Kubeconfig   string         `json:"kubeconfig"`
	Server       string         `json:"server"`
	CAFile       string         `json:"caFile"`
	AdminToken   string         `json:"adminToken"`
	AuditLog     string         `json:"auditLog"`
	LogDir       string         `json:"logDir"`
	Pid          int            `json:"pid"`
	Children     map[string]int `json:"children"`
	Ports        []int          `json:"ports"`
	Nodes        []string       `json:"nodes"`
	StorageClass string         `json:"storageClass"`
}

type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// supervisor starts children from one OS thread that never exits: Pdeathsig is tied to the
// thread that forked the child, so a child started from a thread Go later retires would be
// killed with it. With Pdeathsig=SIGKILL every child dies with this process, even on kill -9.
type supervisor struct {
	mu       sync.Mutex
	children []*child
	spawn    chan spawnReq
	logDir   string
	died     chan string
	stopping bool
}

type spawnReq struct {
	cmd   *exec.Cmd
	reply chan error
}

func newSupervisor(logDir string) *supervisor {
	s := &supervisor{spawn: make(chan spawnReq), logDir: logDir, died: make(chan string, 16)}
	go func() {
		runtime.LockOSThread() // never unlocked: this thread lives as long as the process
		for req := range s.spawn {
			req.reply <- req.cmd.Start()
		}
	}()
	return s
}

func (s *supervisor) start(name string, args ...string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return s.startPath(name, self, append([]string{name}, args...)...)
}

func (s *supervisor) startPath(name, path string, args ...string) (*child, error) {
	logf, err := os.Create(filepath.Join(s.logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	reply := make(chan error)
	s.spawn <- spawnReq{cmd: cmd, reply: reply}
	if err := <-reply; err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(c.done)
		s.mu.Lock()
		stopping := s.stopping
		s.mu.Unlock()
		if !stopping {
			s.died <- fmt.Sprintf("%s exited: %v (log: %s)", name, cmd.ProcessState, logf.Name())
		}
	}()
	s.mu.Lock()
	s.children = append(s.children, c)
	s.mu.Unlock()
	return c, nil
}

// stopAll stops the children in reverse start order: SIGTERM, then SIGKILL after a grace period.
func (s *supervisor) stopAll() {
	s.mu.Lock()
	s.stopping = true
	children := append([]*child(nil), s.children...)
	s.mu.Unlock()
	for i := len(children) - 1; i >= 0; i-- {
		c := children[i]
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "control-plane: "+format+"\n", args...)
}

func up(args []string) int {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	dir := fs.String("dir", "", "working directory (default: a new temporary directory, removed at exit)")
	nodes := fs.Int("nodes", 3, "number of kwok nodes")
	stdinEOF := fs.Bool("exit-on-stdin-eof", false, "stop when standard input closes (the parent died)")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the control plane to be ready")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	removeDir := false
	if *dir == "" {
		d, err := os.MkdirTemp("", "control-plane-")
		if err != nil {
			logf("%v", err)
			return 1
		}
		*dir = d
		removeDir = true
	}
	for _, sub := range []string{"logs", "etcd", "pki"} {
		if err := os.MkdirAll(filepath.Join(*dir, sub), 0o700); err != nil {
			logf("%v", err)
			return 1
		}
	}
	sup := newSupervisor(filepath.Join(*dir, "logs"))
	ctx, cancel := context.WithCancel(context.Background())
	stop := make(chan string, 4)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() { s := <-sig; stop <- "signal " + s.String() }()
	if *stdinEOF {
		go func() {
			_, _ = bufio.NewReader(os.Stdin).ReadString(0) // returns at EOF
			stop <- "standard input closed"
		}()
	}
	go func() { stop <- <-sup.died }()

	ready := make(chan error, 1)
	go func() { ready <- start(ctx, sup, *dir, *nodes) }()
	code := 0
	deadline := time.After(*timeout)
	select {
	case err := <-ready:
		if err != nil {
			logf("not ready: %v", err)
			code = 1
			break
		}
		fmt.Printf("ready %s\n", filepath.Join(*dir, "control-plane.json"))
		os.Stdout.Sync()
		why := <-stop
		logf("stopping: %s", why)
		if strings.Contains(why, "exited") {
			code = 1
		}
	case why := <-stop:
		logf("stopped before ready: %s", why)
		code = 1
	case <-deadline:
		logf("not ready after %s; logs in %s", *timeout, filepath.Join(*dir, "logs"))
		code = 1
	}
	cancel()
	sup.stopAll()
	if code != 0 {
		dumpLogs(filepath.Join(*dir, "logs"))
	}
	if removeDir && code == 0 {
		_ = os.RemoveAll(*dir)
	}
	return code
}

// dumpLogs prints the tail of every component log: a failed start says why.
func dumpLogs(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		logf("--- %s (tail) ---\n%s", e.Name(), data)
	}
}

func start(ctx context.Context, sup *supervisor, dir string, nodes int) error {
	p, err := newPKI(filepath.Join(dir, "pki"))
	if err != nil {
		return err
	}
	var ports []int
	for i := 0; i < 3; i++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		ports = append(ports, port)
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]
	server := fmt.Sprintf("https://127.0.0.1:%d", apiPort)

	tokens := filepath.Join(dir, "pki", "tokens.csv")
	if err := os.WriteFile(tokens, []byte(p.adminToken+",admin,admin-uid,system:masters\n"), 0o600); err != nil {
		return err
	}
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		return err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(adminKubeconfig(server, p)), 0o600); err != nil {
		return err
	}
	auditLog := filepath.Join(dir, "audit.log")

	self, _ := os.Executable()
	bin := filepath.Dir(self)
	kwokBin := filepath.Join(bin, "kwok")
	stages := filepath.Join(bin, "kwok-stages.yaml")
	for _, f := range []string{kwokBin, stages} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%s is missing (tests/control-plane/build.sh builds it): %w", f, err)
		}
	}

	if _, err := sup.start("etcd", "--dir", filepath.Join(dir, "etcd"),
		"--client-port", strconv.Itoa(etcdClient), "--peer-port", strconv.Itoa(etcdPeer)); err != nil {
		return err
	}
	if err := waitTCP(ctx, etcdClient); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	if _, err := sup.start("kube-apiserver",
		"--etcd-servers=http://127.0.0.1:"+strconv.Itoa(etcdClient),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(apiPort),
		"--tls-cert-file="+p.certFile,
		"--tls-private-key-file="+p.keyFile,
		"--client-ca-file="+p.caFile,
		"--token-auth-file="+tokens,
		"--authorization-mode=RBAC",
		// A /16: 65,534 ClusterIPs. A /24 (envtest's default) runs out after 253 Services, and
		// the scale bench makes 1,000 (benches/scale.rs).
		"--service-cluster-ip-range=10.0.0.0/16",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p.saPubFile,
		"--service-account-signing-key-file="+p.saKeyFile,
		"--audit-policy-file="+policy,
		"--audit-log-path="+auditLog,
		"--audit-log-format=json",
		"--audit-log-maxsize=0",
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if err := waitReadyz(ctx, cs); err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	if _, err := sup.start("kube-controller-manager",
		"--kubeconfig="+kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--controllers="+strings.Join(controllers, ","),
		"--root-ca-file="+p.caFile,
		"--service-account-private-key-file="+p.saKeyFile,
		"--use-service-account-credentials=false",
		"--profiling=false",
	); err != nil {
		return err
	}
	if _, err := sup.start("kube-scheduler",
		"--kubeconfig="+kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--profiling=false",
	); err != nil {
		return err
	}
	if _, err := sup.startPath("kwok", kwokBin,
		"--kubeconfig="+kubeconfig,
		"--manage-all-nodes=true",
		"--config="+stages,
		"--node-lease-duration-seconds=0",
	); err != nil {
		return err
	}
	if err := createStorageClass(ctx, cs); err != nil {
		return err
	}
	go provision(ctx, cs)
	var names []string
	for i := 0; i < nodes; i++ {
		name := fmt.Sprintf("kwok-node-%d", i)
		names = append(names, name)
		if err := createNode(ctx, cs, name, i); err != nil {
			return err
		}
	}
	if err := waitNodesReady(ctx, cs, names); err != nil {
		return err
	}
	if err := smokePod(ctx, cs); err != nil {
		return err
	}
	st := State{
		Dir: dir, Kubeconfig: kubeconfig, Server: server, CAFile: p.caFile,
		AdminToken: p.adminToken, AuditLog: auditLog, LogDir: filepath.Join(dir, "logs"),
		Pid: os.Getpid(), Children: map[string]int{}, Ports: ports, Nodes: names,
		StorageClass: storageClassName,
	}
	sup.mu.Lock()
	for _, c := range sup.children {
		st.Children[c.name] = c.cmd.Process.Pid
	}
	sup.mu.Unlock()
	data, _ := json.MarshalIndent(st, "", "  ")
	tmp := filepath.Join(dir, "control-plane.json.tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "control-plane.json"))
}

func adminKubeconfig(server string, p *pki) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
  - name: control-plane
    cluster:
      server: %s
      certificate-authority-data: %s
users:
  - name: admin
    user:
      token: %s
contexts:
  - name: admin
    context:
      cluster: control-plane
      user: admin
      namespace: default
current-context: admin
`, server, base64.StdEncoding.EncodeToString(p.caPEM), p.adminToken)
}

// poll runs f every 200ms until it returns true, an error that is final, or ctx ends.
func poll(ctx context.Context, what string, limit time.Duration, f func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	var last error
	for {
		ok, err := f()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not after %s (last error: %v)", what, limit, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func waitTCP(ctx context.Context, port int) error {
	return poll(ctx, "port "+strconv.Itoa(port), 60*time.Second, func() (bool, error) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err != nil {
			return false, err
		}
		c.Close()
		return true, nil
	})
}

func waitReadyz(ctx context.Context, cs *kubernetes.Clientset) error {
	return poll(ctx, "/readyz", 3*time.Minute, func() (bool, error) {
		var code int
		res := cs.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).StatusCode(&code)
		if res.Error() != nil {
			return false, res.Error()
		}
		return code == http.StatusOK, nil
	})
}

func createStorageClass(ctx context.Context, cs *kubernetes.Clientset) error {
	immediate := storagev1.VolumeBindingImmediate
	reclaim := corev1.PersistentVolumeReclaimDelete
	sc := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{
			Name:        storageClassName,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"},
		},
		Provisioner:       provisionedBy,
		VolumeBindingMode: &immediate,
		ReclaimPolicy:     &reclaim,
	}
	_, err := cs.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func createNode(ctx context.Context, cs *kubernetes.Clientset, name string, i int) error {
	res := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("32"),
		corev1.ResourceMemory:           resource.MustParse("256Gi"),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				"kubernetes.io/hostname":      name,
				"kubernetes.io/os":            "linux",
				"kubernetes.io/arch":          "amd64",
				"topology.kubernetes.io/zone": fmt.Sprintf("zone-%d", i%3),
				"type":                        "kwok",
			},
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
		},
		Status: corev1.NodeStatus{Capacity: res, Allocatable: res},
	}
	_, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// waitNodesReady waits until kwok reports every node Ready, then removes the not-ready taint
// that admission put on at creation (the node lifecycle controller, which would remove it, does
// not run: kwok nodes send no heartbeats).
func waitNodesReady(ctx context.Context, cs *kubernetes.Clientset, names []string) error {
	for _, name := range names {
		err := poll(ctx, "node "+name+" Ready", 2*time.Minute, func() (bool, error) {
			n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			ready := false
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					ready = true
				}
			}
			if !ready {
				return false, nil
			}
			var keep []corev1.Taint
			for _, t := range n.Spec.Taints {
				if t.Key != corev1.TaintNodeNotReady {
					keep = append(keep, t)
				}
			}
			if len(keep) == len(n.Spec.Taints) {
				return true, nil
			}
			n.Spec.Taints = keep
			_, err = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
			return err == nil, err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// smokePod proves the scheduler, kwok and the service-account controller work: a pod in the
// default namespace is scheduled and becomes Ready.
func smokePod(ctx context.Context, cs *kubernetes.Clientset) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "control-plane-smoke"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "c", Image: "example.invalid/none"}},
		},
	}
	pods := cs.CoreV1().Pods("default")
	err := poll(ctx, "smoke pod created", 2*time.Minute, func() (bool, error) {
		_, err := pods.Create(ctx, pod, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			return true, nil
		}
		return false, err // the default ServiceAccount may not exist yet
	})
	if err != nil {
		return err
	}
	err = poll(ctx, "smoke pod Ready", 2*time.Minute, func() (bool, error) {
		p, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, errors.New("phase " + string(p.Status.Phase))
	})
	if err != nil {
		return err
	}
	return pods.Delete(ctx, pod.Name, metav1.DeleteOptions{})
}

// provision gives every pending claim a PersistentVolume bound to it (what a dynamic provisioner
// does; no storage exists behind it) and deletes the volumes it made once their claim is gone.
func provision(ctx context.Context, cs *kubernetes.Clientset) {
	factory := informers.NewSharedInformerFactory(cs, 0)
	claims := factory.Core().V1().PersistentVolumeClaims().Informer()
	volumes := factory.Core().V1().PersistentVolumes().Informer()
	_, _ = claims.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { provisionClaim(ctx, cs, o) },
		UpdateFunc: func(_, o any) { provisionClaim(ctx, cs, o) },
	})
	_, _ = volumes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { releaseVolume(ctx, cs, o) },
		UpdateFunc: func(_, o any) { releaseVolume(ctx, cs, o) },
	})
	factory.Start(ctx.Done())
}

const provisionedBy = "control-plane.test/provisioner"

func provisionClaim(ctx context.Context, cs *kubernetes.Clientset, o any) {
	c, ok := o.(*corev1.PersistentVolumeClaim)
	if !ok || c.Spec.VolumeName != "" || c.DeletionTimestamp != nil || c.Status.Phase != corev1.ClaimPending {
		return
	}
	class := ""
	if c.Spec.StorageClassName != nil {
		class = *c.Spec.StorageClassName
	}
	size := c.Spec.Resources.Requests[corev1.ResourceStorage]
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        "pv-" + string(c.UID),
			Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": provisionedBy},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   c.Spec.AccessModes,
			StorageClassName:              class,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: c.Namespace, Name: c.Name, UID: c.UID,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: "/nonexistent/" + string(c.UID)},
			},
		},
	}
	_, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		logf("provisioner: %s/%s: %v", c.Namespace, c.Name, err)
	}
}

func releaseVolume(ctx context.Context, cs *kubernetes.Clientset, o any) {
	v, ok := o.(*corev1.PersistentVolume)
	if !ok || v.Status.Phase != corev1.VolumeReleased || v.Annotations["pv.kubernetes.io/provisioned-by"] != provisionedBy {
		return
	}
	err := cs.CoreV1().PersistentVolumes().Delete(ctx, v.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		logf("provisioner: delete %s: %v", v.Name, err)
	}
}
