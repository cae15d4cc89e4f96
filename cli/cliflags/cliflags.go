// Package cliflags holds what the skiff verbs share about their command
// lines.
package cliflags

import "flag"

// Parse parses args with flags wherever they stand among the positional
// arguments ("skiff up DIR --gateway-port 0"), as kubectl and istioctl
// (cobra) do, and returns the positionals. Everything after "--" is
// positional.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
