package main

// control-plane proxy: a fault-injecting reverse proxy in front of the real kube-apiserver, for
// the tests that need a misbehaving API server. It listens on plain HTTP on loopback, forwards
// every request (its Authorization header included, so the API server still sees the caller's
// identity and RBAC still applies) over TLS to the upstream, and breaks what it is told to:
//
//	PUT /debug/faults     the faults in force (JSON, below); an empty object clears them
//	GET /debug/faults     the faults in force
//	GET /debug/injected   what it broke so far: injected errors by verb and resource, watch
//	                      streams it closed, 410 Gone answers it gave
//
// Requests to /debug/* are the proxy's own; /version, /api, /apis (discovery) and /openapi are
// never broken. It prints "listening http://127.0.0.1:PORT" on standard output once it serves,
// and exits when standard input closes (its parent died) or on SIGTERM.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Faults is what to break. Field names match tests/support/real_server.rs.
type Faults struct {
	// Seed of the RNG that picks which requests fail; setting faults reseeds it.
	Seed int64 `json:"seed"`
	// Added before every matching request is forwarded.
	LatencyMs int64 `json:"latencyMs"`
	// Probability (0..=1) that a matching request is answered with an error instead.
	ErrorRate float64 `json:"errorRate"`
	// Codes to pick from for injected errors; empty means [500].
	ErrorCodes []int `json:"errorCodes"`
	// Retry-After seconds sent with injected 429s.
	RetryAfterSeconds *int `json:"retryAfterSeconds"`
	// Only these verbs (get, list, watch, create, update, patch, delete, deletecollection);
	// empty means all.
	Verbs []string `json:"verbs"`
	// Only these resources (secrets, statefulsets.apps, secureqdrants.secureqdrant.dev/status);
	// empty means all.
	Resources []string `json:"resources"`
	// Close every matching watch stream after it has passed on this many events.
	WatchDropAfterEvents *int64 `json:"watchDropAfterEvents"`
	// Probability (0..=1) that a matching watch stream is closed after each event.
	WatchDropRate float64 `json:"watchDropRate"`
	// Probability (0..=1) that a matching watch is answered with a 410 Gone ERROR event (the
	// API server's "too old resource version") instead of being forwarded.
	WatchGoneRate float64 `json:"watchGoneRate"`
}

func (f *Faults) applies(verb, resource string) bool {
	match := func(list []string, v string) bool {
		if len(list) == 0 {
			return true
		}
		for _, x := range list {
			if x == v {
				return true
			}
		}
		return false
	}
	return match(f.Verbs, verb) && match(f.Resources, resource)
}

type key struct{ Verb, Resource string }

type injected struct {
	Errors         map[key]int64
	DroppedWatches int64
	GoneWatches    int64
}

type proxyState struct {
	mu       sync.Mutex
	faults   Faults
	rng      *rand.Rand
	injected injected
}

func (s *proxyState) chance(p float64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return p > 0 && s.rng.Float64() < p
}

// request describes a resource request the way the audit log and the tests name it.
type request struct {
	verb, resource string
	resourceReq    bool
}

// classify turns a request into (verb, resource), e.g. ("list", "statefulsets.apps") or
// ("patch", "secureqdrants.secureqdrant.dev/status").
func classify(r *http.Request) request {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var group string
	var rest []string
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		rest = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		group = parts[1]
		rest = parts[3:]
	default:
		return request{}
	}
	if len(rest) >= 2 && rest[0] == "namespaces" && len(rest) > 2 {
		rest = rest[2:]
	}
	if len(rest) == 0 {
		return request{}
	}
	resource := rest[0]
	if group != "" {
		resource += "." + group
	}
	named := len(rest) >= 2
	if len(rest) >= 3 {
		resource += "/" + rest[2]
	}
	q := r.URL.Query()
	var verb string
	switch r.Method {
	case http.MethodGet:
		switch {
		case q.Get("watch") == "true" || q.Get("watch") == "1":
			verb = "watch"
		case named:
			verb = "get"
		default:
			verb = "list"
		}
	case http.MethodPost:
		verb = "create"
	case http.MethodPut:
		verb = "update"
	case http.MethodPatch:
		verb = "patch"
	case http.MethodDelete:
		if named {
			verb = "delete"
		} else {
			verb = "deletecollection"
		}
	default:
		verb = strings.ToLower(r.Method)
	}
	return request{verb: verb, resource: resource, resourceReq: true}
}

func status(w http.ResponseWriter, code int, reason, message string, retryAfter *int) {
	if retryAfter != nil && code == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(*retryAfter))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": message, "reason": reason, "code": code,
	})
}

func reasonOf(code int) string {
	switch code {
	case 409:
		return "Conflict"
	case 429:
		return "TooManyRequests"
	case 410:
		return "Expired"
	case 404:
		return "NotFound"
	case 503:
		return "ServiceUnavailable"
	default:
		return "InternalError"
	}
}

// eventCutter passes a watch stream's events (one JSON object a line) through and ends the
// stream early when the faults say so.
type eventCutter struct {
	src    io.ReadCloser
	reader *bufio.Reader
	buf    bytes.Buffer
	state  *proxyState
	faults Faults
	events int64
	done   bool
}

func (c *eventCutter) Read(p []byte) (int, error) {
	for c.buf.Len() == 0 {
		if c.done {
			return 0, io.EOF
		}
		line, err := c.reader.ReadBytes('\n')
		if len(line) > 0 {
			c.buf.Write(line)
			if bytes.HasSuffix(line, []byte("\n")) && !bytes.Contains(line, []byte(`"type":"BOOKMARK"`)) {
				c.events++
				drop := (c.faults.WatchDropAfterEvents != nil && c.events >= *c.faults.WatchDropAfterEvents) ||
					c.state.chance(c.faults.WatchDropRate)
				if drop {
					c.state.mu.Lock()
					c.state.injected.DroppedWatches++
					c.state.mu.Unlock()
					c.done = true
				}
			}
		}
		if err != nil {
			if c.buf.Len() == 0 {
				return 0, err
			}
			c.done = true
		}
	}
	return c.buf.Read(p)
}

func (c *eventCutter) Close() error { return c.src.Close() }

func runProxy(args []string) int {
	fs := flag.NewFlagSet("proxy", flag.ExitOnError)
	upstream := fs.String("upstream", "", "the API server's URL (https://127.0.0.1:PORT)")
	caFile := fs.String("ca", "", "the CA that signed the API server's serving certificate")
	listen := fs.String("listen", "127.0.0.1:0", "where to listen (plain HTTP)")
	_ = fs.Parse(args)
	target, err := url.Parse(*upstream)
	if err != nil || *upstream == "" {
		fmt.Fprintln(os.Stderr, "proxy: --upstream URL is required")
		return 2
	}
	pool := x509.NewCertPool()
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "proxy:", err)
			return 1
		}
		pool.AppendCertsFromPEM(pem)
	}
	state := &proxyState{rng: rand.New(rand.NewSource(0)), injected: injected{Errors: map[key]int64{}}}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1 // stream watch events as they come
	rp.Transport = &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 64,
		ForceAttemptHTTP2:   false,
	}
	rp.ModifyResponse = func(resp *http.Response) error {
		req := classify(resp.Request)
		if req.verb != "watch" || resp.StatusCode != http.StatusOK {
			return nil
		}
		state.mu.Lock()
		f := state.faults
		state.mu.Unlock()
		if !f.applies(req.verb, req.resource) || (f.WatchDropAfterEvents == nil && f.WatchDropRate == 0) {
			return nil
		}
		resp.Body = &eventCutter{src: resp.Body, reader: bufio.NewReader(resp.Body), state: state, faults: f}
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/faults", func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPut, http.MethodPost:
			var f Faults
			if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			state.mu.Lock()
			state.faults = f
			state.rng = rand.New(rand.NewSource(f.Seed))
			state.mu.Unlock()
		}
		state.mu.Lock()
		defer state.mu.Unlock()
		_ = json.NewEncoder(w).Encode(state.faults)
	})
	mux.HandleFunc("/debug/injected", func(w http.ResponseWriter, r *http.Request) {
		state.mu.Lock()
		defer state.mu.Unlock()
		rows := []map[string]any{}
		for k, n := range state.injected.Errors {
			rows = append(rows, map[string]any{"verb": k.Verb, "resource": k.Resource, "count": n})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"errors": rows, "droppedWatches": state.injected.DroppedWatches,
			"goneWatches": state.injected.GoneWatches,
		})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		req := classify(r)
		state.mu.Lock()
		f := state.faults
		state.mu.Unlock()
		if req.resourceReq && f.applies(req.verb, req.resource) {
			if f.LatencyMs > 0 {
				select {
				case <-time.After(time.Duration(f.LatencyMs) * time.Millisecond):
				case <-r.Context().Done():
					return
				}
			}
			if req.verb == "watch" && state.chance(f.WatchGoneRate) {
				state.mu.Lock()
				state.injected.GoneWatches++
				state.mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusOK)
				_ = json.NewEncoder(w).Encode(map[string]any{"type": "ERROR", "object": map[string]any{
					"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
					"status": "Failure", "message": "too old resource version (injected)",
					"reason": "Expired", "code": 410,
				}})
				return
			}
			if state.chance(f.ErrorRate) {
				state.mu.Lock()
				code := 500
				if len(f.ErrorCodes) > 0 {
					code = f.ErrorCodes[state.rng.Intn(len(f.ErrorCodes))]
				}
				state.injected.Errors[key{req.verb, req.resource}]++
				state.mu.Unlock()
				status(w, code, reasonOf(code), fmt.Sprintf("injected %d for %s %s", code, req.verb, req.resource), f.RetryAfterSeconds)
				return
			}
		}
		rp.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxy:", err)
		return 1
	}
	fmt.Printf("listening http://%s\n", ln.Addr())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		os.Exit(0)
	}()
	if err := http.Serve(ln, mux); err != nil {
		fmt.Fprintln(os.Stderr, "proxy:", err)
		return 1
	}
	return 0
}
