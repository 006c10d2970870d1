module github.com/gopeft/peft

go 1.22

require (
	github.com/stretchr/testify v1.12.1
	github.com/sugarme/gotch v0.9.1
	go.yaml.in/yaml/v3 v3.0.5
	golang.org/x/text v0.22.0
)
