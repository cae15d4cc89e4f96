package mesh

import (
	"context"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"
)

// Down is `skiff down`: the running mesh stops its applications, sidecars,
// gateway and skiffd; Down returns once the supervisor has exited.
func Down(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("down", "skiff down [flags]", stderr)
	stateDir := stateDirFlag(fs)
	wait := fs.Duration("timeout", time.Minute, "how long to wait for the mesh to stop")
	pos, err := parse(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) > 0 {
		fmt.Fprintln(stderr, "skiff down: takes no arguments: skiff down [--state-dir DIR]")
		return 2
	}
	c, st, err := client(*stateDir)
	if err != nil {
		fmt.Fprintln(stderr, "skiff down:", err)
		return 1
	}
	if err := c.Down(ctx); err != nil {
		fmt.Fprintln(stderr, "skiff down:", err)
		return 1
	}
	deadline := time.Now().Add(*wait)
	for unix.Kill(st.PID, 0) == nil {
		if time.Now().After(deadline) {
			fmt.Fprintf(stderr, "skiff down: the mesh (pid %d) is still stopping after %s; see its output, or kill it\n", st.PID, *wait)
			return 1
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(stdout, "local mesh stopped (pid %d)\n", st.PID)
	return 0
}
