module github.com/straitproxy/strait

go 1.26.8

require go.yaml.in/yaml/v3 v3.0.6

require (
	github.com/coder/websocket v1.8.15
	github.com/miekg/dns v1.1.73
)

require (
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
)
