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
