package inspect

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// configOpts are proxy-config's flags; each TYPE registers those it reads.
type configOpts struct {
	ns, output, file string
	verbose          bool
	// Filters, as istioctl names them.
	address, typ, fqdn, subset, direction, name, cluster, status string
	port                                                         uint
}

// configType is one TYPE of proxy-config.
type configType struct {
	name    string
	aliases []string
	flags   []string // filter flags it takes, in usage order
	summary string
	// endpoints says it reads the proxy's /clusters rather than its config dump.
	endpoints bool
}

var configTypes = []configType{
	{name: "all", aliases: []string{"a"}, flags: []string{"address", "port", "type", "name", "fqdn", "subset", "direction", "cluster", "status"},
		summary: "clusters, listeners, routes, endpoints and secrets (endpoints only from a live proxy, not with -f); -o json|yaml prints the whole config dump"},
	{name: "listeners", aliases: []string{"listener", "l"}, flags: []string{"address", "port", "type"},
		summary: "listeners: ADDRESSES PORT MATCH DESTINATION (--verbose=false: ADDRESSES PORT TYPE)"},
	{name: "routes", aliases: []string{"route", "r"}, flags: []string{"name"},
		summary: "route configurations: NAME VHOST NAME DOMAINS MATCH VIRTUAL SERVICE (--verbose=false: NAME VIRTUAL HOSTS)"},
	{name: "clusters", aliases: []string{"cluster", "c"}, flags: []string{"fqdn", "port", "subset", "direction"},
		summary: "clusters: SERVICE FQDN PORT SUBSET DIRECTION TYPE DESTINATION RULE"},
	{name: "endpoints", aliases: []string{"endpoint", "ep", "eps"}, flags: []string{"address", "port", "cluster", "status"}, endpoints: true,
		summary: "endpoints of every cluster, from the proxy's /clusters: ENDPOINT STATUS OUTLIER CHECK CLUSTER"},
	{name: "secret", aliases: []string{"secrets", "s"},
		summary: "certificates: RESOURCE NAME TYPE STATUS VALID CERT SERIAL NUMBER NOT AFTER NOT BEFORE"},
}

var flagHelp = map[string][2]string{
	"address":   {"--address ADDR", "only listeners or endpoints on this IP address"},
	"port":      {"--port N", "only listeners, clusters or endpoints of this port"},
	"type":      {"--type TYPE", "only listeners of this type: HTTP, TCP, HTTP+TCP"},
	"name":      {"--name NAME", "only the route configuration of this name"},
	"fqdn":      {"--fqdn HOST", "only clusters whose service FQDN contains HOST"},
	"subset":    {"--subset NAME", "only clusters of this subset"},
	"direction": {"--direction DIR", "only clusters of this direction: inbound or outbound"},
	"cluster":   {"--cluster NAME", "only endpoints of clusters whose name contains NAME"},
	"status":    {"--status STATUS", "only endpoints of this health status (HEALTHY, UNHEALTHY, DRAINING, ...)"},
}

func configUsage(t *configType) string {
	var b strings.Builder
	if t == nil {
		b.WriteString(topUsage)
		b.WriteString("types:\n")
		for _, ct := range configTypes {
			fmt.Fprintf(&b, "  %-10s %s\n", ct.name, ct.summary)
		}
		return b.String()
	}
	fmt.Fprintf(&b, "usage: skiff proxy-config %s POD[.NAMESPACE] [flags]\n  %s\nflags:\n", t.name, t.summary)
	line := func(flag, help string) { fmt.Fprintf(&b, "  %-28s%s\n", flag, help) }
	line("-n, --namespace NAMESPACE", `namespace of POD when it has no ".NAMESPACE" (default "default")`)
	line("-o, --output FORMAT", "short (the table, default), json or yaml")
	if t.name == "all" || t.name == "listeners" || t.name == "routes" {
		line("--verbose=false", "fewer columns for listeners and routes")
	}
	if t.endpoints {
		line("-f, --file FILE", "read the proxy's /clusters?format=json output from FILE instead of POD")
	} else {
		line("-f, --file FILE", "read an Envoy /config_dump from FILE instead of POD")
	}
	for _, f := range t.flags {
		line(flagHelp[f][0], flagHelp[f][1])
	}
	return b.String()
}

func findType(name string) *configType {
	for i := range configTypes {
		t := &configTypes[i]
		if t.name == name {
			return t
		}
		for _, a := range t.aliases {
			if a == name {
				return t
			}
		}
	}
	return nil
}

func runConfig(ctx context.Context, args []string, env Env, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) == 0 {
			return usagef("proxy-config needs a TYPE and a POD\n%s", configUsage(nil))
		}
		fmt.Fprint(stdout, configUsage(nil))
		return flag.ErrHelp
	}
	t := findType(args[0])
	if t == nil {
		return usagef("unknown proxy-config type %q\n%s", args[0], configUsage(nil))
	}
	usage := configUsage(t)
	o := configOpts{}
	fs := flag.NewFlagSet("proxy-config "+t.name, flag.ContinueOnError)
	fs.StringVar(&o.ns, "n", "default", "")
	fs.StringVar(&o.ns, "namespace", "default", "")
	fs.StringVar(&o.output, "o", "short", "")
	fs.StringVar(&o.output, "output", "short", "")
	fs.StringVar(&o.file, "f", "", "")
	fs.StringVar(&o.file, "file", "", "")
	fs.BoolVar(&o.verbose, "verbose", true, "")
	for _, f := range t.flags {
		switch f {
		case "address":
			fs.StringVar(&o.address, f, "", "")
		case "port":
			fs.UintVar(&o.port, f, 0, "")
		case "type":
			fs.StringVar(&o.typ, f, "", "")
		case "name":
			fs.StringVar(&o.name, f, "", "")
		case "fqdn":
			fs.StringVar(&o.fqdn, f, "", "")
		case "subset":
			fs.StringVar(&o.subset, f, "", "")
		case "direction":
			fs.StringVar(&o.direction, f, "", "")
		case "cluster":
			fs.StringVar(&o.cluster, f, "", "")
		case "status":
			fs.StringVar(&o.status, f, "", "")
		}
	}
	pos, err := parseFlags(fs, args[1:], usage, stdout)
	if err != nil {
		return err
	}
	switch o.output {
	case "short", "json", "yaml":
	default:
		return usagef("-o %s: want short, json or yaml\n%s", o.output, usage)
	}
	if o.direction != "" && o.direction != "inbound" && o.direction != "outbound" {
		return usagef("--direction %s: want inbound or outbound", o.direction)
	}
	if o.typ != "" && !strings.EqualFold(o.typ, "HTTP") && !strings.EqualFold(o.typ, "TCP") && !strings.EqualFold(o.typ, "HTTP+TCP") {
		return usagef("--type %s: want HTTP, TCP or HTTP+TCP", o.typ)
	}

	src, err := configSource(env, o, pos, usage)
	if err != nil {
		return err
	}
	switch t.name {
	case "all":
		return printAll(ctx, src, o, env.Now, stdout)
	case "endpoints":
		b, err := src.clustersJSON(ctx)
		if err != nil {
			return err
		}
		return printEndpoints(b, src.name, o, stdout)
	}
	d, err := src.dump(ctx)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	switch t.name {
	case "listeners":
		err = printListeners(d, o, &out)
	case "routes":
		err = printRoutes(d, o, &out)
	case "clusters":
		err = printClusters(d, o, &out)
	case "secret":
		err = printSecrets(d, o, env.Now, &out)
	}
	if err != nil {
		return err
	}
	_, err = stdout.Write(out.Bytes())
	return err
}

// source is where proxy-config reads: a live proxy or a file.
type source struct {
	name  string // for messages: "the proxy of pod x.y" or the file name
	file  string
	proxy getter
}

func configSource(env Env, o configOpts, pos []string, usage string) (*source, error) {
	switch {
	case o.file != "" && len(pos) == 0:
		return &source{name: o.file, file: o.file}, nil
	case o.file != "":
		return nil, usagef("give POD or -f FILE, not both (got POD %q and -f %s)", pos[0], o.file)
	case len(pos) == 0:
		return nil, usagef("missing POD: which pod's proxy to read (POD or POD.NAMESPACE)\n%s", usage)
	case len(pos) > 1:
		return nil, usagef("proxy-config takes one POD, got %q\n%s", pos, usage)
	}
	pod := podArg(pos[0], o.ns)
	addr, err := adminAddr(env, pod)
	if err != nil {
		return nil, err
	}
	return &source{name: "the proxy of pod " + pod.String(), proxy: proxyAdmin(env, pod, addr)}, nil
}

func (s *source) read(ctx context.Context, path string) ([]byte, error) {
	if s.file != "" {
		b, err := os.ReadFile(s.file)
		if err != nil {
			return nil, fmt.Errorf("-f: %w", err)
		}
		return b, nil
	}
	return s.proxy.get(ctx, path)
}

func (s *source) rawDump(ctx context.Context) ([]byte, error) {
	return s.read(ctx, "/config_dump?include_eds")
}

func (s *source) dump(ctx context.Context) (*configDump, error) {
	b, err := s.read(ctx, "/config_dump")
	if err != nil {
		return nil, err
	}
	return parseConfigDump(b, s.name)
}

func (s *source) clustersJSON(ctx context.Context) ([]byte, error) {
	return s.read(ctx, "/clusters?format=json")
}

// printAll prints each type's table in turn, or the whole dump as it came.
func printAll(ctx context.Context, src *source, o configOpts, now func() time.Time, stdout io.Writer) error {
	if o.output != "short" {
		b, err := src.rawDump(ctx)
		if err != nil {
			return err
		}
		if o.output == "yaml" {
			y, err := yaml.JSONToYAML(b)
			if err != nil {
				return fmt.Errorf("config dump from %s: %v", src.name, err)
			}
			_, err = stdout.Write(y)
			return err
		}
		var buf bytes.Buffer
		if err := json.Indent(&buf, b, "", "    "); err != nil {
			return fmt.Errorf("config dump from %s is not JSON: %v", src.name, err)
		}
		buf.WriteByte('\n')
		_, err = stdout.Write(buf.Bytes())
		return err
	}
	d, err := src.dump(ctx)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	parts := []func(*bytes.Buffer) error{
		func(w *bytes.Buffer) error { return printClusters(d, o, w) },
		func(w *bytes.Buffer) error { return printListeners(d, o, w) },
		func(w *bytes.Buffer) error { return printRoutes(d, o, w) },
	}
	if src.file == "" {
		parts = append(parts, func(w *bytes.Buffer) error {
			b, err := src.clustersJSON(ctx)
			if err != nil {
				return err
			}
			return printEndpoints(b, src.name, o, w)
		})
	}
	parts = append(parts, func(w *bytes.Buffer) error { return printSecrets(d, o, now, w) })
	for i, p := range parts {
		if i > 0 {
			out.WriteString("\n")
		}
		if err := p(&out); err != nil {
			return err
		}
	}
	_, err = stdout.Write(out.Bytes())
	return err
}
