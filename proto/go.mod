module microbox/proto

go 1.19
