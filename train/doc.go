// Package train fine-tunes models: a Trainer for any model with the
// library's forward pass (a peft.Model, or a fully trainable base model
// for full fine-tuning), AdamW in PyTorch's update order with its state
// saved in checkpoints, learning-rate schedules, gradient clipping and
// evaluation.
//
//	ds, _ := data.Instructions(tok, records, data.Options{Template: chatml, MaxLength: 512})
//	tr := train.New(model, train.Config{LR: 2e-4, BatchSize: 4, GradAccum: 4, Epochs: 3,
//		WarmupRatio: 0.03, Schedule: train.Cosine, MaxGradNorm: 1, WeightDecay: 0.01,
//		EvalSteps: 100, SaveSteps: 500, OutputDir: "out", Checkpointing: true})
//	err := tr.Fit(ds, evalSet)
//
// A run is deterministic for a seed: the epochs' sample orders and every
// random draw of the forward pass (dropout) derive from Config.Seed and the
// position in the run, so resuming from a checkpoint (ResumeFrom) continues
// the loss curve of the uninterrupted run. Each checkpoint-<step>/ folder
// holds what the model's Save writes (a PEFT adapter folder, or a HF model
// folder for full fine-tuning), the trainable parameters, the optimizer
// state and trainer_state.json; OutputDir/metrics.jsonl has one JSON line
// per step and per evaluation.
//
// Data-parallel training: started by a launcher (torchrun --no-python,
// `peft train --nproc N`, or RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set
// by hand on several machines), the same program trains as one rank of a
// c10d process group (package dist; Gloo on the CPU). Rank 0's trainable
// parameters are broadcast at the start; each rank reads its share of
// every global micro-batch (BatchSize per rank, every sample once per
// epoch); the gradients are summed across ranks in flat buckets before
// clipping and the optimizer step, weighted so that the result is one
// process's gradient with BatchSize × ranks; losses and evaluations are
// reduced over the ranks; rank 0 alone writes checkpoints and metrics.
// A rank that dies or fails makes the others return an error.
//
// Memory: Config.Checkpointing turns on activation checkpointing per
// decoder layer (models.Checkpoint); peft.EstimateMemory sizes a job.
package train
