// RUN: not neuron-opt %s --split-input-file 2>&1 | filecheck %s

func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {
  %a = nc.activation %x {func = "frobnicate"} : tensor<2xf32> -> tensor<2xf32>
  func.return %a : tensor<2xf32>
}
// CHECK: error: {{.*}}op 'nc.activation': nc.activation: func 'frobnicate' is not one of

// -----

func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {
  %w = nc.weight {value = dense<1.0> : tensor<2xf32>, memory = "l3cache"} : tensor<2xf32>
  func.return %w : tensor<2xf32>
}
// CHECK: error: {{.*}}op 'nc.weight': nc.weight: memory 'l3cache' is not one of hbm, sbuf

// -----

func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {
  %m = nc.tensor_tensor %x, %x {op = "add", reads = ["sbuf"]} : tensor<2xf32>, tensor<2xf32> -> tensor<2xf32>
  func.return %m : tensor<2xf32>
}
// CHECK: error: {{.*}}nc.tensor_tensor: reads lists 1 memories for 2 operand(s)

// -----

func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {
  %y = "nc.program"(%x) <{target = "inf1", batch = 1 : i64, cores = 2 : i64}> ({
  ^bb0(%in: tensor<2xf32>):
    nc.return %in : tensor<2xf32>
  }) : (tensor<2xf32>) -> tensor<2xf32>
  func.return %y : tensor<2xf32>
}
// CHECK: error: {{.*}}nc.program: 2 core(s) but 1 stage region(s)

// -----

// A send whose channel nobody receives.
func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {
  %y = nc.program(%x) attributes {target = "inf1", batch = 1 : i64, cores = 2 : i64} : (tensor<2xf32>) -> tensor<2xf32> {
  ^bb0(%a: tensor<2xf32>):
    nc.send %a {to_stage = 1 : i64, channel = 0 : i64} : tensor<2xf32>
    nc.return
  } {
  ^bb0(%b: tensor<2xf32>):
    nc.return %b : tensor<2xf32>
  }
  func.return %y : tensor<2xf32>
}
// CHECK: error: {{.*}}nc.program: channel 0 has no nc.recv

// -----

// The receiver names the wrong sender stage.
func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {
  %y = nc.program(%x) attributes {target = "inf1", batch = 1 : i64, cores = 3 : i64} : (tensor<2xf32>) -> tensor<2xf32> {
  ^bb0(%a: tensor<2xf32>):
    nc.send %a {to_stage = 2 : i64, channel = 3 : i64} : tensor<2xf32>
    nc.return
  } {
  ^bb0(%b: tensor<2xf32>):
    nc.return
  } {
  ^bb0(%c: tensor<2xf32>):
    %r = nc.recv {from_stage = 1 : i64, channel = 3 : i64} : tensor<2xf32>
    nc.return %r : tensor<2xf32>
  }
  func.return %y : tensor<2xf32>
}
// CHECK: error: {{.*}}nc.program: channel 3 is sent by stage 0 to stage 2 but received by stage 2 from stage 1

// -----

// A value cannot travel back to an earlier stage.
func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {
  %y = nc.program(%x) attributes {target = "inf1", batch = 1 : i64, cores = 2 : i64} : (tensor<2xf32>) -> tensor<2xf32> {
  ^bb0(%a: tensor<2xf32>):
    %r = nc.recv {from_stage = 1 : i64, channel = 0 : i64} : tensor<2xf32>
    nc.return
  } {
  ^bb0(%b: tensor<2xf32>):
    nc.send %b {to_stage = 0 : i64, channel = 0 : i64} : tensor<2xf32>
    nc.return %b : tensor<2xf32>
  }
  func.return %y : tensor<2xf32>
}
// CHECK: error: {{.*}}nc.program: channel 0 must go to a later stage (stage 1 to stage 0)

// -----

// Sender and receiver disagree on the type.
func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {
  %y = nc.program(%x) attributes {target = "inf1", batch = 1 : i64, cores = 2 : i64} : (tensor<2xf32>) -> tensor<2xf32> {
  ^bb0(%a: tensor<2xf32>):
    nc.send %a {to_stage = 1 : i64, channel = 0 : i64} : tensor<2xf32>
    nc.return
  } {
  ^bb0(%b: tensor<2xf32>):
    %r = nc.recv {from_stage = 0 : i64, channel = 0 : i64} : tensor<4xf32>
    nc.return %b : tensor<2xf32>
  }
  func.return %y : tensor<2xf32>
}
// CHECK: error: {{.*}}nc.program: channel 0 sends tensor<2xf32> but receives tensor<4xf32>

// -----

// nc.send only lives in a stage of an nc.program.
func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {
  nc.send %x {to_stage = 1 : i64, channel = 0 : i64} : tensor<2xf32>
  func.return %x : tensor<2xf32>
}
// CHECK: error: {{.*}}nc.send{{.*}}expects parent op 'nc.program'
