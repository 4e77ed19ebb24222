// promql-names parses PromQL expressions with Prometheus's own parser (the version pinned in
// ../go.mod, the same as promtool's) and prints, for each, the metric names its selectors use.
//
// Input (stdin): a JSON array of expressions. Output (stdout): a JSON array, one object per
// expression, in order: {"expr": ..., "error": "..." or "", "names": [...]}. A selector without
// a plain `__name__="..."` matcher (e.g. `{__name__=~"x.*"}`) is reported as an error: every name
// must be checkable. Exit code 0 unless the input is not a JSON array of strings.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type result struct {
	Expr  string   `json:"expr"`
	Error string   `json:"error"`
	Names []string `json:"names"`
}

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintln(os.Stderr, "promql-names: stdin is not a JSON array of strings:", err)
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	out := make([]result, 0, len(exprs))
	for _, e := range exprs {
		r := result{Expr: e, Names: []string{}}
		expr, err := p.ParseExpr(e)
		if err != nil {
			r.Error = err.Error()
			out = append(out, r)
			continue
		}
		seen := map[string]bool{}
		for _, matchers := range parser.ExtractSelectors(expr) {
			name := ""
			for _, m := range matchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
			if name == "" {
				r.Error = "a selector without a metric name"
				continue
			}
			seen[name] = true
		}
		for n := range seen {
			r.Names = append(r.Names, n)
		}
		sort.Strings(r.Names)
		out = append(out, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "promql-names:", err)
		os.Exit(1)
	}
}
