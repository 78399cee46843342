// RUN: neuron-opt %s -p 'pipeline-shard{cores=2}' | filecheck %s --check-prefix=TWO
// RUN: neuron-opt %s -p 'pipeline-shard{cores=3}' | filecheck %s --check-prefix=THREE
// RUN: neuron-opt %s -p 'pipeline-shard{cores=auto}' | filecheck %s --check-prefix=AUTO

// Before: one stage of 8 ops, dispatch-bound (2 us an op on inf1). %g0 is used by
// ops 1 and 5 (a skip connection) and %w0 by ops 0 and 6.
func.func private @neuron_subgraph_0(%x : tensor<4x64xf32>) -> tensor<4x64xf32> attributes {neuron.target = "inf1"} {
  %r = nc.program(%x) attributes {target = "inf1", batch = 1 : i64, cores = 1 : i64} : (tensor<4x64xf32>) -> tensor<4x64xf32> {
  ^bb0(%a: tensor<4x64xf32>):
    %w0 = nc.weight {value = dense<0.5> : tensor<64x64xf32>, memory = "hbm"} : tensor<64x64xf32>
    %m0 = nc.matmul %a, %w0 : tensor<4x64xf32>, tensor<64x64xf32> -> tensor<4x64xf32>
    %g0 = nc.activation %m0 {func = "tanh"} : tensor<4x64xf32> -> tensor<4x64xf32>
    %w1 = nc.weight {value = dense<0.25> : tensor<64x64xf32>, memory = "hbm"} : tensor<64x64xf32>
    %m1 = nc.matmul %g0, %w1 : tensor<4x64xf32>, tensor<64x64xf32> -> tensor<4x64xf32>
    %g1 = nc.activation %m1 {func = "tanh"} : tensor<4x64xf32> -> tensor<4x64xf32>
    %s = nc.tensor_tensor %g1, %g0 {op = "add"} : tensor<4x64xf32>, tensor<4x64xf32> -> tensor<4x64xf32>
    %m2 = nc.matmul %s, %w0 : tensor<4x64xf32>, tensor<64x64xf32> -> tensor<4x64xf32>
    %g2 = nc.activation %m2 {func = "tanh"} : tensor<4x64xf32> -> tensor<4x64xf32>
    nc.return %g2 : tensor<4x64xf32>
  }
  func.return %r : tensor<4x64xf32>
}

// Two stages: 2 ops + a send of %g0 against a recv + 5 ops is the min-max split (every
// other cut sends two values or leaves more ops on one side). The skip value %g0
// crosses the cut; %w0 is cloned into the stage that also reads it; weights are placed
// in SBUF and every op is priced.
// TWO:      nc.program(%x) attributes {target = "inf1", batch = 1 : i64, cores = 2 : i64}
// TWO-NEXT: ^bb0(%a: tensor<4x64xf32>):
// TWO-NEXT:   %w0 = nc.weight {value = dense<0.5> : tensor<64x64xf32>, memory = "sbuf"}
// TWO-NEXT:   %m0 = nc.matmul %a, %w0 {reads = ["sbuf", "sbuf"], est_time = {{.*}}}
// TWO-NEXT:   %g0 = nc.activation %m0 {func = "tanh", reads = ["sbuf"], est_time = {{.*}}}
// TWO-NEXT:   nc.send %g0 {to_stage = 1 : i64, channel = 0 : i64, reads = ["sbuf"], est_time = {{.*}}} : tensor<4x64xf32>
// TWO-NEXT:   nc.return
// TWO-NEXT: } {
// TWO-NEXT: ^bb0(%a_1: tensor<4x64xf32>):
// TWO-NEXT:   %g0_1 = nc.recv {from_stage = 0 : i64, channel = 0 : i64, est_time = {{.*}}} : tensor<4x64xf32>
// TWO-NEXT:   %w1 = nc.weight {{.*}} memory = "sbuf"}
// TWO-NEXT:   %m1 = nc.matmul %g0_1, %w1
// TWO-NEXT:   %g1 = nc.activation %m1
// TWO-NEXT:   %s = nc.tensor_tensor %g1, %g0_1 {op = "add"
// TWO-NEXT:   %w0_1 = nc.weight {value = dense<0.5> : tensor<64x64xf32>, memory = "sbuf"}
// TWO-NEXT:   %m2 = nc.matmul %s, %w0_1
// TWO-NEXT:   %g2 = nc.activation %m2
// TWO-NEXT:   nc.return %g2 : tensor<4x64xf32>
// TWO-NEXT: }

// Three stages: %g0 goes to stage 1, %s from stage 1 to stage 2, on their own channels.
// THREE:      cores = 3 : i64
// THREE:      %g0 = nc.activation %m0
// THREE-NEXT: nc.send %g0 {to_stage = 1 : i64, channel = 0 : i64
// THREE-NEXT: nc.return
// THREE-NEXT: } {
// THREE:      %g0_1 = nc.recv {from_stage = 0 : i64, channel = 0 : i64
// THREE:      %s = nc.tensor_tensor %g1, %g0_1 {op = "add"
// THREE-NEXT: nc.send %s {to_stage = 2 : i64, channel = 1 : i64
// THREE-NEXT: nc.return
// THREE-NEXT: } {
// THREE-NEXT: ^bb0(%a_2: tensor<4x64xf32>):
// THREE-NEXT:   %s_1 = nc.recv {from_stage = 1 : i64, channel = 1 : i64
// THREE-NEXT:   %w0_1 = nc.weight
// THREE-NEXT:   %m2 = nc.matmul %s_1, %w0_1
// THREE-NEXT:   %g2 = nc.activation %m2
// THREE-NEXT:   nc.return %g2 : tensor<4x64xf32>
// THREE-NEXT: }

// The 32 KiB of weights fit one core's SBUF: auto keeps one stage (nothing to cut).
// AUTO:     cores = 1 : i64
// AUTO-NOT: nc.send
