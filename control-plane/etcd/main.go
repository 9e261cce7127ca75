// Command etcd is etcd's server, built from its published module for kubeci's test
// control plane (etcd's own main does exactly this).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
