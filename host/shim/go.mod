module microbox/shim

go 1.19
