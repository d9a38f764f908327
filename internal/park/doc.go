// Package park holds idle keep-alive connections cheaply, and runs
// connections on goroutines whose stacks have already grown: a Parker
// waits for their next requests without their goroutines or buffers and
// wakes them in the order the requests came; Workers run them.
package park
