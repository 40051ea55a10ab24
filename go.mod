module github.com/onetrap/onetrap

go 1.26.8

require (
	github.com/stretchr/testify v1.12.1 // indirect
	golang.org/x/arch v0.32.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
