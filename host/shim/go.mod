module microbox/shim

go 1.19

require microbox/proto v0.0.0

// The protocol's one definition (proto/proto.go), beside this module in a
// checkout and in a wheel (microbox/_go), so builds need no network.
replace microbox/proto => ../../proto
