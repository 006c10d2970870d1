module example.com/consumer

go 1.22

require github.com/gopeft/peft v0.0.0-00010101000000-000000000000

require (
	github.com/sugarme/gotch v0.9.1 // indirect
	golang.org/x/text v0.22.0 // indirect
)

// The library is not published yet: CI builds this module against the
// checkout it sits in. A real project has no replace line (see README.md).
replace github.com/gopeft/peft => ../..
