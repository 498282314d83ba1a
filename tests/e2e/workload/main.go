// e2e-workload produces, on a real Temporal server, workflow runs in every status the
// end-to-end tests compare: completed, failed, canceled, terminated, timed out,
// continued-as-new and still running, each with a memo and, when asked, custom search
// attributes. It runs its own worker for the kinds that need one, waits until every
// run that should close has closed, and prints the expected number of runs per status
// as one JSON object on stdout.
//
//	e2e-workload --address 127.0.0.1:7233 --namespace orders --prefix w1 --count 5 \
//	    [--search-attributes]
//
// Workflow ids are <prefix>-<kind>-<i>. Running and timed-out runs use a task queue
// no worker polls, so they stay running or time out on the server's own timer.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// The custom search attributes the tests register (temporal operator search-attribute create).
var (
	keywordKey = temporal.NewSearchAttributeKeyKeyword("E2eKeyword")
	intKey     = temporal.NewSearchAttributeKeyInt64("E2eInt")
)

func completeWorkflow(ctx workflow.Context, n int) (string, error) {
	return fmt.Sprintf("done %d", n), nil
}

func failWorkflow(ctx workflow.Context, n int) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf("failed on purpose %d", n), "E2eFailure", nil)
}

// continueWorkflow continues as new `left` times, then completes: left+1 runs in all.
func continueWorkflow(ctx workflow.Context, left int) (string, error) {
	if left > 0 {
		return "", workflow.NewContinueAsNewError(ctx, continueWorkflow, left-1)
	}
	return "chain done", nil
}

// waitWorkflow waits (for an hour) until it is canceled.
func waitWorkflow(ctx workflow.Context) error {
	return workflow.Sleep(ctx, time.Hour)
}

type kind struct {
	name     string
	idle     bool     // started on the task queue no worker polls
	statuses []string // the statuses its runs end in
}

var kinds = []kind{
	{name: "completed", statuses: []string{"Completed"}},
	{name: "failed", statuses: []string{"Failed"}},
	{name: "canceled", statuses: []string{"Canceled"}},
	{name: "continued", statuses: []string{"ContinuedAsNew", "ContinuedAsNew", "Completed"}},
	{name: "terminated", idle: true, statuses: []string{"Terminated"}},
	{name: "timedout", idle: true, statuses: []string{"TimedOut"}},
	{name: "running", idle: true, statuses: []string{"Running"}},
}

func main() {
	address := flag.String("address", "127.0.0.1:7233", "frontend host:port")
	namespace := flag.String("namespace", "default", "namespace")
	prefix := flag.String("prefix", "w", "workflow id prefix (one per workload)")
	count := flag.Int("count", 3, "runs of each kind")
	withSA := flag.Bool("search-attributes", false, "set the custom search attributes E2eKeyword and E2eInt")
	flag.Parse()
	log.SetOutput(os.Stderr)
	log.SetPrefix("e2e-workload: ")

	c, err := dialWithRetry(*address, *namespace)
	if err != nil {
		log.Fatalf("connect %s namespace %s: %v", *address, *namespace, err)
	}
	defer c.Close()

	taskQueue := "e2e-" + *prefix
	idleQueue := "e2e-idle-" + *prefix
	w := worker.New(c, taskQueue, worker.Options{})
	w.RegisterWorkflowWithOptions(completeWorkflow, workflow.RegisterOptions{Name: "E2eComplete"})
	w.RegisterWorkflowWithOptions(failWorkflow, workflow.RegisterOptions{Name: "E2eFail"})
	w.RegisterWorkflowWithOptions(continueWorkflow, workflow.RegisterOptions{Name: "E2eContinue"})
	w.RegisterWorkflowWithOptions(waitWorkflow, workflow.RegisterOptions{Name: "E2eWait"})
	if err := w.Start(); err != nil {
		log.Fatalf("worker: %v", err)
	}
	defer w.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	expected := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, len(kinds)**count)
	sem := make(chan struct{}, 8)
	for _, k := range kinds {
		for i := 0; i < *count; i++ {
			for _, s := range k.statuses {
				expected[s]++
			}
			wg.Add(1)
			go func(k kind, i int) {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				if err := runOne(ctx, c, k, i, *prefix, taskQueue, idleQueue, *withSA); err != nil {
					errs <- fmt.Errorf("%s-%s-%d: %w", *prefix, k.name, i, err)
				}
			}(k, i)
		}
	}
	wg.Wait()
	close(errs)
	var all []string
	for err := range errs {
		all = append(all, err.Error())
	}
	if len(all) > 0 {
		log.Fatalf("%d runs did not end as planned:\n  %s", len(all), strings.Join(all, "\n  "))
	}
	out, _ := json.Marshal(expected)
	fmt.Println(string(out))
}

// dialWithRetry connects and waits until the namespace is known to the frontend (a new
// namespace reaches the frontend's cache within its refresh interval).
func dialWithRetry(address, namespace string) (client.Client, error) {
	deadline := time.Now().Add(90 * time.Second)
	for {
		c, err := client.Dial(client.Options{HostPort: address, Namespace: namespace,
			Logger: quietLogger{}})
		if err == nil {
			_, err = c.WorkflowService().DescribeNamespace(context.Background(),
				describeNamespace(namespace))
			if err == nil {
				return c, nil
			}
			c.Close()
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(time.Second)
	}
}

func runOne(ctx context.Context, c client.Client, k kind, i int, prefix, taskQueue, idleQueue string, withSA bool) error {
	id := fmt.Sprintf("%s-%s-%d", prefix, k.name, i)
	opts := client.StartWorkflowOptions{
		ID:        id,
		TaskQueue: taskQueue,
		Memo: map[string]interface{}{
			"owner": "vismig-e2e",
			"batch": prefix,
			"kind":  k.name,
			"n":     i,
		},
	}
	if k.idle {
		opts.TaskQueue = idleQueue
	}
	if withSA {
		opts.TypedSearchAttributes = temporal.NewSearchAttributes(
			keywordKey.ValueSet(prefix+"-"+k.name),
			intKey.ValueSet(int64(i)),
		)
	}
	var (
		run client.WorkflowRun
		err error
	)
	start := func(wf string, args ...interface{}) error {
		for attempt := 0; ; attempt++ {
			run, err = c.ExecuteWorkflow(ctx, opts, wf, args...)
			// A new namespace, or a search attribute just registered, reaches the
			// frontend's namespace cache within its refresh interval (10s).
			var nf *serviceerror.NamespaceNotFound
			var invalid *serviceerror.InvalidArgument
			retry := errors.As(err, &nf) ||
				(errors.As(err, &invalid) && strings.Contains(invalid.Error(), "search attribute"))
			if retry && attempt < 60 {
				time.Sleep(time.Second)
				continue
			}
			return err
		}
	}
	switch k.name {
	case "completed":
		if err := start("E2eComplete", i); err != nil {
			return err
		}
		return run.Get(ctx, nil)
	case "failed":
		if err := start("E2eFail", i); err != nil {
			return err
		}
		if err := run.Get(ctx, nil); err == nil {
			return errors.New("completed, expected to fail")
		}
		return nil
	case "continued":
		if err := start("E2eContinue", 2); err != nil {
			return err
		}
		return run.Get(ctx, nil)
	case "canceled":
		if err := start("E2eWait"); err != nil {
			return err
		}
		// Cancel once the workflow task ran (its timer exists), so the run ends Canceled.
		time.Sleep(500 * time.Millisecond)
		if err := c.CancelWorkflow(ctx, id, run.GetRunID()); err != nil {
			return err
		}
		var canceled *temporal.CanceledError
		if err := run.Get(ctx, nil); !errors.As(err, &canceled) {
			return fmt.Errorf("expected canceled, got %v", err)
		}
		return nil
	case "terminated":
		if err := start("E2eComplete", i); err != nil {
			return err
		}
		return c.TerminateWorkflow(ctx, id, run.GetRunID(), "vismig e2e")
	case "timedout":
		opts.WorkflowExecutionTimeout = 2 * time.Second
		if err := start("E2eComplete", i); err != nil {
			return err
		}
		var timeout *temporal.TimeoutError
		if err := run.Get(ctx, nil); !errors.As(err, &timeout) {
			return fmt.Errorf("expected timed out, got %v", err)
		}
		return nil
	case "running":
		return start("E2eComplete", i)
	}
	return fmt.Errorf("unknown kind %s", k.name)
}
