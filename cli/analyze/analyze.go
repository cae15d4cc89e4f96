// Package analyze is `skiff analyze`: istioctl analyze's checks, run
// offline on manifest files. Files are read by the same decoder and
// validator skiffd uses; invalid objects are reported as
// SchemaValidationError (IST0106), and the whole set is then analyzed by
// controlplane/analyze.
package analyze

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	"github.com/skiff-mesh/skiff/cli/cliflags"
	"github.com/skiff-mesh/skiff/controlplane/analyze"
	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/kube"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
)

// Exit codes, as istioctl's.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 64 // bad flags or arguments
	exitParseError  = 65 // some files could not be read, and nothing else was found
	exitFoundIssues = 79 // messages at or above --failure-threshold
)

const usage = `usage: skiff analyze [flags] FILE|DIR...
       skiff analyze --kubeconfig FILE [flags] [FILE|DIR...]

Checks Istio, Gateway API and Kubernetes manifests as istioctl analyze does:
offline, every *.yaml, *.yml and *.json file under each DIR is read; with
--kubeconfig, the live cluster's objects too (files then count as applied
to it).
Messages carry Istio's codes (IST0101 …). Exit code 79 when a message
reaches --failure-threshold (log output only, as istioctl), 65 when files
could not be parsed, 64 on bad usage.

flags:
`

type options struct {
	output           string
	failureThreshold analyze.Level
	outputThreshold  analyze.Level
	namespace        string
	allNamespaces    bool
	suppress         []string
	mesh             string
	checkInjection   string
	ignoreUnknown    bool
	kubeconfig       string
	kubeTimeout      time.Duration
}

type levelFlag struct{ l *analyze.Level }

func (f levelFlag) String() string {
	if f.l == nil {
		return ""
	}
	return f.l.String()
}

func (f levelFlag) Set(s string) error {
	l, err := analyze.ParseLevel(s)
	if err != nil {
		return err
	}
	*f.l = l
	return nil
}

type listFlag struct{ l *[]string }

func (f listFlag) String() string { return "" }
func (f listFlag) Set(s string) error {
	*f.l = append(*f.l, s)
	return nil
}

// Run is `skiff analyze ARGS`; it returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts := options{failureThreshold: analyze.Error, outputThreshold: analyze.Info}
	fs := flag.NewFlagSet("skiff analyze", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, n := range []string{"o", "output"} {
		fs.StringVar(&opts.output, n, "log", "output format: log, json or yaml")
	}
	fs.Var(levelFlag{&opts.failureThreshold}, "failure-threshold", "the level (Info, Warning, Error) at which messages make the exit code non-zero (default Error)")
	fs.Var(levelFlag{&opts.outputThreshold}, "output-threshold", "the lowest level (Info, Warning, Error) of messages printed (default Info)")
	for _, n := range []string{"n", "namespace"} {
		fs.StringVar(&opts.namespace, n, "", "report only on objects in this namespace (default: every namespace)")
	}
	for _, n := range []string{"A", "all-namespaces"} {
		fs.BoolVar(&opts.allNamespaces, n, false, "report on every namespace (the default for files)")
	}
	for _, n := range []string{"S", "suppress"} {
		fs.Var(listFlag{&opts.suppress}, n, `suppress a code on matching objects: CODE=KIND NAME.NAMESPACE, '*' as a wildcard (e.g. "IST0118=Service *.default"); repeatable`)
	}
	fs.StringVar(&opts.mesh, "mesh", "local", "what runs the files: local (skiff up: built-in ingress gateway, sidecars everywhere) or kubernetes (only what the files declare)")
	fs.StringVar(&opts.checkInjection, "check-injection", "", "report namespaces without istio-injection (IST0102): true or false (default: true for --mesh kubernetes, false for local)")
	fs.StringVar(&opts.kubeconfig, "kubeconfig", "", "also analyze the live cluster of this kubeconfig `FILE` (as istioctl analyze does by default): every Istio, Gateway API and Kubernetes object skiffd would read; files given as well are analyzed as if applied to it")
	fs.DurationVar(&opts.kubeTimeout, "timeout", 30*time.Second, "how long reading the live cluster may take")
	fs.BoolVar(&opts.ignoreUnknown, "ignore-unknown", false, "do not count documents that cannot be parsed, or of kinds Skiff does not read, as failures")
	var recursive bool
	for _, n := range []string{"R", "recursive"} {
		fs.BoolVar(&recursive, n, true, "accepted for istioctl compatibility: directories are always read recursively, as skiff up reads them")
	}

	targets, err := cliflags.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return exitOK
	}
	if err == nil {
		err = opts.check(targets)
	}
	if err != nil {
		fmt.Fprintf(stderr, "skiff analyze: %v\nRun 'skiff analyze -h' for usage.\n", err)
		return exitUsage
	}
	suppress, err := parseSuppressions(opts.suppress)
	if err != nil {
		fmt.Fprintf(stderr, "skiff analyze: %v\n", err)
		return exitUsage
	}

	files, err := gather(targets, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "skiff analyze: %v\n", err)
		return exitError
	}
	if err := ctx.Err(); err != nil {
		fmt.Fprintf(stderr, "skiff analyze: %v\n", err)
		return exitError
	}
	store := config.NewStore(validation.Validate, nil)
	if opts.kubeconfig != "" {
		// A cluster is what the analysis is about: Kubernetes rules apply.
		opts.mesh = "kubernetes"
		if err := loadCluster(ctx, store, opts.kubeconfig, opts.kubeTimeout); err != nil {
			fmt.Fprintf(stderr, "skiff analyze: %v\n", err)
			return exitError
		}
		targets = append([]string{"cluster " + opts.kubeconfig}, targets...)
	}
	objs, schemaErrs, parseErrs := load(store, files)
	for _, e := range parseErrs {
		if !opts.ignoreUnknown {
			fmt.Fprintf(stderr, "Error adding file: %v\n", e.Error())
		}
	}

	aopts := analyze.Options{LocalMesh: opts.mesh == "local", NamespaceInjection: opts.mesh == "kubernetes"}
	if opts.checkInjection != "" {
		aopts.NamespaceInjection = opts.checkInjection == "true"
	}
	if !aopts.LocalMesh {
		// Warnings about what the local mesh cannot run do not concern a
		// Kubernetes cluster.
		schemaErrs = slices.DeleteFunc(schemaErrs, func(e config.ObjectError) bool {
			return e.Warning && strings.Contains(e.Message, validation.LocalMeshOnly)
		})
	}
	msgs := append(analyze.SchemaMessages(schemaErrs), analyze.Analyze(objs, aopts)...)
	analyze.Sort(msgs)

	var kept []analyze.Message
	for _, m := range msgs {
		if opts.namespace != "" && !inNamespace(m, opts.namespace) || suppressed(m, suppress) {
			continue
		}
		kept = append(kept, m)
	}
	var shown []analyze.Message
	for _, m := range kept {
		if m.Type.Level >= opts.outputThreshold {
			shown = append(shown, m)
		}
	}

	if err := print(stdout, opts.output, shown); err != nil {
		fmt.Fprintf(stderr, "skiff analyze: %v\n", err)
		return exitError
	}
	what := strings.Join(targets, ", ")
	if len(shown) == 0 {
		if len(parseErrs) == 0 || opts.ignoreUnknown {
			fmt.Fprintf(stderr, "\u2714 No validation issues found when analyzing %s.\n", what)
		} else {
			fmt.Fprintf(stderr, "No validation issues found when analyzing %s (but %d %s could not be parsed).\n", what, len(parseErrs), plural(len(parseErrs), "document", "documents"))
		}
	}
	// As istioctl: the exit code follows the messages before the output
	// threshold, and only the log format sets it.
	if opts.output != "log" {
		return exitOK
	}
	for _, m := range kept {
		if m.Type.Level >= opts.failureThreshold {
			fmt.Fprintf(stderr, "Error: Analyzers found issues when analyzing %s.\nSee https://istio.io/latest/docs/reference/config/analysis for more information about causes and resolutions.\n", what)
			return exitFoundIssues
		}
	}
	if len(parseErrs) > 0 && !opts.ignoreUnknown {
		return exitParseError
	}
	return exitOK
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func (o *options) check(targets []string) error {
	switch o.output {
	case "log", "json", "yaml":
	default:
		return fmt.Errorf("-o %s: not a valid output format; use log, json or yaml", o.output)
	}
	switch o.mesh {
	case "local", "kubernetes":
	default:
		return fmt.Errorf("--mesh %s: use local or kubernetes", o.mesh)
	}
	switch o.checkInjection {
	case "", "true", "false":
	default:
		return fmt.Errorf("--check-injection %s: use true or false", o.checkInjection)
	}
	if o.allNamespaces && o.namespace != "" {
		return fmt.Errorf("-A and -n %s together: choose one", o.namespace)
	}
	if len(targets) == 0 && o.kubeconfig == "" {
		return errors.New("nothing to analyze: name the manifest files or directories (skiff analyze FILE|DIR...), or a cluster with --kubeconfig FILE")
	}
	return nil
}

func isManifest(p string) bool {
	switch filepath.Ext(p) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// gather lists the manifest files the targets name: files as given,
// directories walked recursively (hidden entries skipped, as the file
// source skips them).
func gather(targets []string, stderr io.Writer) ([]string, error) {
	var files []string
	for _, t := range targets {
		fi, err := os.Stat(t)
		if err != nil {
			return nil, fmt.Errorf("cannot read %s: %w", t, err)
		}
		if !fi.IsDir() {
			if !isManifest(t) {
				fmt.Fprintf(stderr, "Skipping file %s, recognized file extensions are: [.json .yaml .yml]\n", t)
				continue
			}
			files = append(files, t)
			continue
		}
		err = filepath.WalkDir(t, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if p != t && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.IsDir() && isManifest(p) {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("cannot read directory %s: %w", t, err)
		}
	}
	return files, nil
}

// load decodes and validates the files as skiffd's file source and store
// do, and returns the objects in force, the schema problems to report as
// messages, and the documents that could not be parsed at all.
func load(store *config.Store, files []string) (objs []*config.Object, schema, parse []config.ObjectError) {
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			parse = append(parse, config.ObjectError{Pos: config.Position{File: f}, Message: fmt.Sprintf("cannot read the file: %v", err), Unreadable: true})
			continue
		}
		decoded, errs := config.Decode(data, f)
		store.Replace(f, decoded, errs)
	}
	for _, e := range store.Errors() {
		if e.Unreadable || e.Key.Kind.Kind == "" && strings.HasPrefix(e.Message, "unknown kind") {
			parse = append(parse, e)
			continue
		}
		schema = append(schema, e)
	}
	return store.Snapshot().All(), schema, parse
}

func inNamespace(m analyze.Message, ns string) bool {
	if m.Object.Namespace == ns {
		return true
	}
	return m.Object.Kind == config.Namespace && m.Object.Name == ns
}

type suppression struct{ code, resource string }

func parseSuppressions(list []string) ([]suppression, error) {
	var out []suppression
	for _, s := range list {
		code, res, ok := strings.Cut(s, "=")
		if !ok || code == "" || res == "" {
			return nil, fmt.Errorf("--suppress %q: want CODE=KIND NAME.NAMESPACE, e.g. \"IST0102=Namespace default\"", s)
		}
		if _, err := path.Match(res, ""); err != nil {
			return nil, fmt.Errorf("--suppress %q: bad pattern: %v", s, err)
		}
		out = append(out, suppression{code, res})
	}
	return out, nil
}

// suppressed matches istioctl's resource form "Kind name.namespace".
func suppressed(m analyze.Message, list []suppression) bool {
	res := m.Object.Kind.Kind + " " + m.Object.Name
	if m.Object.Namespace != "" {
		res += "." + m.Object.Namespace
	}
	for _, s := range list {
		if s.code != m.Type.Code {
			continue
		}
		if ok, _ := path.Match(s.resource, res); ok {
			return true
		}
	}
	return false
}

func print(w io.Writer, format string, ms []analyze.Message) error {
	if format == "log" {
		for _, m := range ms {
			fmt.Fprintln(w, m.String())
			if m.Fix != "" {
				fmt.Fprintln(w, "  Fix:", m.Fix)
			}
		}
		return nil
	}
	list := make([]map[string]any, 0, len(ms))
	for _, m := range ms {
		e := map[string]any{
			"code":             m.Type.Code,
			"level":            m.Type.Level.String(),
			"message":          m.Text,
			"documentationUrl": m.DocumentationURL(),
		}
		if o := m.Origin(); o != "" {
			e["origin"] = o
		}
		if p := m.Pos.String(); p != "" {
			e["reference"] = p
		}
		if m.Path != "" {
			e["field"] = m.Path
		}
		if m.Fix != "" {
			e["fix"] = m.Fix
		}
		list = append(list, e)
	}
	var out []byte
	var err error
	if format == "json" {
		out, err = json.MarshalIndent(list, "", "\t")
	} else {
		out, err = yaml.Marshal(list)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, strings.TrimRight(string(out), "\n"))
	return err
}

// loadCluster reads everything skiffd's Kubernetes source reads from the
// cluster into store, once: the same informers, kinds, decoding and
// validation, stopped as soon as every kind is listed.
func loadCluster(ctx context.Context, store *config.Store, kubeconfig string, timeout time.Duration) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.UserAgent = "skiff-analyze"
	cfg.QPS, cfg.Burst = 100, 200 // one list per kind, at once
	// client-go logs through klog to stderr; the report is all a user
	// should see.
	klog.SetSlogLogger(slog.New(slog.DiscardHandler))
	src, err := kube.New(cfg, kube.Options{GatewaySecretsOnly: true})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, store) }()
	select {
	case <-src.Synced():
		cancel()
		<-done
		return nil
	case err := <-done:
		if err == nil {
			err = ctx.Err()
		}
		return err
	case <-ctx.Done():
		<-done
		return fmt.Errorf("reading the cluster of %s: not every kind was listed within --timeout %s; check that the API server answers (kubectl get ns)", kubeconfig, timeout)
	}
}
