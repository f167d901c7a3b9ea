//go:build test_performance

// Tidepool's side-by-side benchmark, added to Karpenter's scheduling test
// package by scripts/bench-scheduler.sh (it is not part of Karpenter).
//
// Karpenter's own BenchmarkScheduling* solve "diverse" pods (a fifth each
// generic, zone spread, hostname spread, zone affinity and hostname
// anti-affinity) against 400 instance types. Tidepool's planner packs
// pods into a pool's few sizes and has no spread or pod-affinity
// constraints, so the closest comparable workload is Karpenter's generic
// pods alone against instance types with the allocatable of Tidepool's
// sizes. The sizes come from TIDEPOOL_SIZES, which the Rust benchmark
// prints: "name:cpu:memory:pods" of each size's allocatable, comma
// separated.

package scheduling_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	fakecr "sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1 "sigs.k8s.io/karpenter/pkg/apis/v1"
	"sigs.k8s.io/karpenter/pkg/cloudprovider"
	"sigs.k8s.io/karpenter/pkg/cloudprovider/fake"
	"sigs.k8s.io/karpenter/pkg/controllers/provisioning/scheduling"
	"sigs.k8s.io/karpenter/pkg/controllers/state"
	"sigs.k8s.io/karpenter/pkg/events"
	"sigs.k8s.io/karpenter/pkg/operator/injection"
	"sigs.k8s.io/karpenter/pkg/operator/options"
	"sigs.k8s.io/karpenter/pkg/test"
)

// tidepoolSizes turns TIDEPOOL_SIZES into instance types whose allocatable
// (capacity less the fake provider's 100m and 10Mi kube-reserved) is the
// sizes' allocatable.
func tidepoolSizes(b *testing.B) []*cloudprovider.InstanceType {
	spec := os.Getenv("TIDEPOOL_SIZES")
	if spec == "" {
		b.Skip("TIDEPOOL_SIZES is not set (scripts/bench-scheduler.sh sets it)")
	}
	var types []*cloudprovider.InstanceType
	for _, size := range strings.Split(spec, ",") {
		f := strings.Split(size, ":")
		if len(f) != 4 {
			b.Fatalf("TIDEPOOL_SIZES: %q is not name:cpu:memory:pods", size)
		}
		cpu := resource.MustParse(f[1])
		cpu.Add(resource.MustParse("100m"))
		memory := resource.MustParse(f[2])
		memory.Add(resource.MustParse("10Mi"))
		types = append(types, fake.NewInstanceType(fake.InstanceTypeOptions{
			Name: f[0],
			Resources: corev1.ResourceList{
				corev1.ResourceCPU:    cpu,
				corev1.ResourceMemory: memory,
				corev1.ResourcePods:   resource.MustParse(f[3]),
			},
		}))
	}
	return types
}

func benchmarkTidepoolSizes(b *testing.B, count int) {
	ctx := options.ToContext(injection.WithControllerName(context.Background(), "provisioner"), test.Options())
	types := tidepoolSizes(b)
	pods := makeGenericPods(count)
	nodePool := test.NodePool(v1.NodePool{Spec: v1.NodePoolSpec{Limits: v1.Limits{
		corev1.ResourceCPU:    resource.MustParse("10000000"),
		corev1.ResourceMemory: resource.MustParse("10000000Gi"),
	}}})
	provider := fake.NewCloudProvider()
	provider.InstanceTypes = types
	client := fakecr.NewFakeClient()
	clk := &clock.RealClock{}
	clusterState := state.NewCluster(clk, client, provider)
	byPool := map[string][]*cloudprovider.InstanceType{nodePool.Name: types}
	opts := []scheduling.Options{scheduling.NumConcurrentReconciles(5)}
	topology, err := scheduling.NewTopology(ctx, client, clusterState, nil, []*v1.NodePool{nodePool}, byPool, pods, opts...)
	if err != nil {
		b.Fatalf("creating topology: %s", err)
	}
	scheduler := scheduling.NewScheduler(ctx, client, []*v1.NodePool{nodePool}, clusterState, nil, topology,
		byPool, nil, events.NewRecorder(&record.FakeRecorder{}), clk, nil, opts...)
	b.ResetTimer()
	start := time.Now()
	nodes := map[string]int{}
	for i := 0; i < b.N; i++ {
		results, err := scheduler.Solve(ctx, pods)
		if err != nil {
			b.Fatalf("solving: %s", err)
		}
		if len(results.PodErrors) > 0 {
			b.Fatalf("%d pods did not schedule", len(results.PodErrors))
		}
		if i == 0 {
			for _, claim := range results.NewNodeClaims {
				// The cheapest instance type the claim may launch as.
				nodes[claim.InstanceTypeOptions.OrderByPrice(claim.Requirements)[0].Name]++
			}
		}
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(count)/(elapsed.Seconds()/float64(b.N)), "pods/sec")
	total := 0
	for name, n := range nodes {
		total += n
		b.ReportMetric(float64(n), name)
	}
	b.ReportMetric(float64(total), "nodes")
}

func BenchmarkTidepoolSizes1000(b *testing.B)  { benchmarkTidepoolSizes(b, 1000) }
func BenchmarkTidepoolSizes5000(b *testing.B)  { benchmarkTidepoolSizes(b, 5000) }
func BenchmarkTidepoolSizes10000(b *testing.B) { benchmarkTidepoolSizes(b, 10000) }
func BenchmarkTidepoolSizes20000(b *testing.B) { benchmarkTidepoolSizes(b, 20000) }
