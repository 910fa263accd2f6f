// seqd-example draws one number of a group chat through the Go client and
// prints it as seqd's text protocol would (`seq=N source=…`): the example
// of docs/clients.md, and the Go side of the test that every client sees one
// counter.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	seqd "github.com/seqd/seqd/clients/go"
)

func main() {
	socket := flag.String("socket", seqd.DefaultSocket, "seqd's socket")
	group := flag.String("group", "example", "the group chat")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := seqd.Dial(ctx, *socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "seqd:", err)
		os.Exit(1)
	}
	defer c.Close()
	n, err := c.GenerateGroupChatSequence(ctx, *group)
	if err != nil {
		fmt.Fprintln(os.Stderr, "seqd:", err)
		os.Exit(1)
	}
	fmt.Printf("seq=%d source=%s\n", n.Seq, n.Source)
}
