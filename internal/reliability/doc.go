// Package reliability holds the repository-wide reliability checks (see
// RELIABILITY.md): a test that no library code can panic or end the
// process on outside data by construction (no panic, os.Exit, log.Fatal,
// Must* on a non-constant argument), and the fault test's helpers live
// beside the packages they exercise.
package reliability
