module microbox/agent

go 1.19
