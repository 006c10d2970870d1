module example.com/consumer

go 1.26.0

require github.com/gopeft/peft v0.0.0-00010101000000-000000000000

require (
	git.sr.ht/~sbinet/gg v0.5.0 // indirect
	github.com/ajstarks/svgo v0.0.0-20211024235047-1546f124cd8b // indirect
	github.com/campoy/embedmd v1.0.0 // indirect
	github.com/go-fonts/liberation v0.3.1 // indirect
	github.com/go-latex/latex v0.0.0-20230307184459-12ec69307ad9 // indirect
	github.com/go-pdf/fpdf v0.8.0 // indirect
	github.com/golang/freetype v0.0.0-20170609003504-e2365dfdc4a0 // indirect
	github.com/pmezard/go-difflib v1.0.0 // indirect
	github.com/sugarme/gotch v0.9.1 // indirect
	golang.org/x/image v0.11.0 // indirect
	golang.org/x/text v0.22.0 // indirect
	gonum.org/v1/plot v0.14.0 // indirect
)

// The library is not published yet: CI builds this module against the
// checkout it sits in. A real project has no replace line (see README.md).
replace github.com/gopeft/peft => ../..
