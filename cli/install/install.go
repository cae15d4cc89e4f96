// Package install is istioctl's install verbs for Skiff: `skiff manifest
// generate` prints a profile's manifest (package install renders it),
// `skiff install` applies it with server-side apply (CRDs first, once they
// are Established; then the rest; objects of the revision no longer in the
// manifest are pruned), `skiff uninstall` deletes what install created
// (found by its owner label), and `skiff verify-install` checks that every
// object exists and the Deployments are available.
package install

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/skiff-mesh/skiff/cli/cliflags"
	inst "github.com/skiff-mesh/skiff/install"
)

// stdin answers install's and uninstall's confirmation prompt (-y skips it).
var stdin io.Reader = os.Stdin

// Run runs verb ("install", "manifest", "uninstall" or "verify-install")
// with its arguments and returns the exit code: 0 success, 1 failure, 2
// a usage error.
func Run(ctx context.Context, verb string, args []string, stdout, stderr io.Writer) int {
	var err error
	switch verb {
	case "manifest":
		if len(args) == 0 || args[0] != "generate" {
			fmt.Fprintln(stderr, "usage: skiff manifest generate [--profile P] [--set PATH=VALUE]… [--revision R] [-o FILE]")
			return 2
		}
		err = runManifest(args[1:], stdout, stderr)
	case "install":
		err = runInstall(ctx, args, stdout, stderr)
	case "uninstall":
		err = runUninstall(ctx, args, stdout, stderr)
	case "verify-install":
		err = runVerify(ctx, args, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "skiff: unknown install verb %q (install, manifest generate, uninstall, verify-install)\n", verb)
		return 2
	}
	var usage usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &usage):
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "skiff "+verb+":", err)
		}
		return 2
	default:
		fmt.Fprintln(stderr, "skiff "+verb+":", err)
		return 1
	}
}

type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// profileFlags are the flags that choose a manifest.
type profileFlags struct {
	profile  string
	revision string
	sets     []string
}

func (p *profileFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.profile, "profile", "default", "installation profile: "+strings.Join(inst.Profiles, ", "))
	fs.StringVar(&p.revision, "revision", "", "control plane revision (istio.io/rev); empty is the default revision")
	fs.Func("set", "`PATH=VALUE` over the profile's values, istioctl's names (meshConfig.accessLogFile=/dev/stdout, "+
		"components.egressGateways[0].enabled=true, values.pilot.replicaCount=2, hub=…, tag=…); repeatable", func(s string) error {
		p.sets = append(p.sets, s)
		return nil
	})
}

// manifest renders the chosen profile.
func (p *profileFlags) manifest() (*inst.Manifest, error) {
	v, err := inst.ProfileValues(p.profile)
	if err != nil {
		return nil, usageError{fmt.Errorf("--profile: %w", err)}
	}
	if p.revision != "" {
		if err := v.Set("revision=" + p.revision); err != nil {
			return nil, usageError{fmt.Errorf("--revision %s: %w", p.revision, err)}
		}
	}
	for _, s := range p.sets {
		if err := v.Set(s); err != nil {
			return nil, usageError{err}
		}
	}
	return inst.Generate(v)
}

func parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	pos, err := cliflags.Parse(fs, args)
	if err != nil {
		return usageError{err}
	}
	if len(pos) > 0 {
		return usageError{fmt.Errorf("unexpected argument %q; every setting is a flag (see --help)", pos[0])}
	}
	return nil
}

func runManifest(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("skiff manifest generate", flag.ContinueOnError)
	var pf profileFlags
	pf.register(fs)
	out := fs.String("o", "", "write the manifest to `FILE` instead of standard output")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	m, err := pf.manifest()
	if err != nil {
		return err
	}
	for _, w := range m.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if *out == "" {
		return m.WriteYAML(stdout)
	}
	f, err := os.Create(*out)
	if err != nil {
		return fmt.Errorf("-o %s: %w", *out, err)
	}
	w := bufio.NewWriter(f)
	err = m.WriteYAML(w)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("-o %s: %w", *out, err)
	}
	fmt.Fprintf(stderr, "wrote %d objects to %s\n", len(m.CRDs)+len(m.Objects), *out)
	return nil
}

func runInstall(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("skiff install", flag.ContinueOnError)
	var pf profileFlags
	pf.register(fs)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig `FILE` (default $KUBECONFIG, else ~/.kube/config)")
	yes := fs.Bool("y", false, "do not ask for confirmation")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the CRDs to be Established")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	m, err := pf.manifest()
	if err != nil {
		return err
	}
	for _, w := range m.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	c, err := newClient(*kubeconfig)
	if err != nil {
		return err
	}
	if !*yes && !confirm(stdout, fmt.Sprintf("This will install the Skiff %s profile (revision %s) into the cluster at %s. Proceed? (y/N) ",
		m.Values.Profile, m.Values.Rev(), c.host)) {
		return errors.New("cancelled")
	}
	sum, err := c.install(ctx, m, *timeout, stdout)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Installed profile %s (revision %s): %s. Check it with: skiff verify-install --profile %s%s\n",
		m.Values.Profile, m.Values.Rev(), sum, m.Values.Profile, revFlag(m.Values.Revision))
	return nil
}

func revFlag(rev string) string {
	if rev == "" {
		return ""
	}
	return " --revision " + rev
}

// confirm asks question and reads a yes.
func confirm(w io.Writer, question string) bool {
	fmt.Fprint(w, question)
	line, _ := bufio.NewReader(stdin).ReadString('\n')
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes"
}
