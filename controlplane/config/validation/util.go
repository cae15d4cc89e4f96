package validation

import (
	"maps"
	"slices"
)

// sortedKeys makes map iteration, and so the order of reported errors, stable.
func sortedKeys[K interface{ ~string | ~uint32 }, V any](m map[K]V) []K {
	return slices.Sorted(maps.Keys(m))
}
