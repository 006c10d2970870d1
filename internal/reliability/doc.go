// Package reliability holds repository-wide reliability checks (see
// RELIABILITY.md): that no library code can panic or end the process on
// outside data by construction (no panic, os.Exit, log.Fatal, Must* on a
// non-constant argument), and that bad forward inputs give errors through
// every method. The kill tests live beside the packages they exercise
// (lora, train).
package reliability
