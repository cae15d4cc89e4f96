package iptables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Binary is the iptables program Apply and Cleanup run, found on PATH.
const Binary = "iptables"

// tables Build may write to, in the order Cleanup visits them.
var tables = []string{"nat", "raw"}

// Apply installs c in the current network namespace. Chains left by an
// earlier run are removed first, so applying twice leaves one copy. On a
// failure the partial rules are removed and the error names the command.
func Apply(ctx context.Context, c Config) error {
	cmds, err := Build(c)
	if err != nil {
		return err
	}
	if err := Cleanup(ctx); err != nil {
		return err
	}
	for _, cmd := range cmds {
		if err := run(ctx, cmd.Table, cmd.Args...); err != nil {
			if cerr := Cleanup(ctx); cerr != nil {
				return fmt.Errorf("%w (and removing the partial rules failed: %v)", err, cerr)
			}
			return err
		}
	}
	return nil
}

// Cleanup removes every ISTIO_* chain and every jump to one from the
// built-in chains, whatever config installed them, as istio-iptables
// --cleanup-only does. It is a no-op when nothing is installed.
func Cleanup(ctx context.Context) error {
	for _, table := range tables {
		out, err := output(ctx, table, "-S")
		if err != nil {
			if table != "nat" && strings.Contains(err.Error(), "does not exist") {
				// The raw table exists only once something loaded it.
				continue
			}
			return err
		}
		var chains []string
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) == 2 && f[0] == "-N" && strings.HasPrefix(f[1], chainPrefix):
				chains = append(chains, f[1])
			case len(f) > 2 && f[0] == "-A" && !strings.HasPrefix(f[1], chainPrefix) && jumpsToOurs(f):
				if err := run(ctx, table, append([]string{"-D"}, f[1:]...)...); err != nil {
					return err
				}
			}
		}
		// Flush all before deleting any: the chains jump to each other.
		for _, ch := range chains {
			if err := run(ctx, table, "-F", ch); err != nil {
				return err
			}
		}
		for _, ch := range chains {
			if err := run(ctx, table, "-X", ch); err != nil {
				return err
			}
		}
	}
	return nil
}

func jumpsToOurs(f []string) bool {
	for i := 0; i+1 < len(f); i++ {
		if (f[i] == "-j" || f[i] == "-g") && strings.HasPrefix(f[i+1], chainPrefix) {
			return true
		}
	}
	return false
}

func run(ctx context.Context, table string, args ...string) error {
	_, err := output(ctx, table, args...)
	return err
}

func output(ctx context.Context, table string, args ...string) (string, error) {
	full := append([]string{"-w", "-t", table}, args...)
	cmd := exec.CommandContext(ctx, Binary, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if _, ok := err.(*exec.Error); ok {
			return "", fmt.Errorf("%s not found: install iptables (Debian: apt-get install iptables): %w", Binary, err)
		}
		return "", fmt.Errorf("%s %s: %v: %s", Binary, strings.Join(full, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
